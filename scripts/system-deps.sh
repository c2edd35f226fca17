#!/usr/bin/env bash
# Install the Debian packages persemo's demo and tests use, when they are missing and we may.
# Never fails the build: a missing package makes the tests that need it skip with a reason.
set -u
want=("$@")
[ ${#want[@]} -eq 0 ] && want=(espeak-ng chromium)
missing=()
for w in "${want[@]}"; do
  case "$w" in
    espeak-ng) command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng) ;;
    chromium) { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || missing+=(chromium chromium-driver) ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "persemo: installing ${missing[*]} with apt-get" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}") \
    >/tmp/persemo-apt.log 2>&1 || echo "persemo: could not install ${missing[*]} (see /tmp/persemo-apt.log); tests that need them will skip" >&2
else
  echo "persemo: ${missing[*]} missing and not root: install them with your package manager; tests that need them will skip" >&2
fi
exit 0

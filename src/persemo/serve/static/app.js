// persemo page: upload a file to POST /v1/predict, or stream the microphone to WebSocket /v1/stream.
import { Downsampler, Int16Chunker } from './resampler.js';

const $ = (id) => document.getElementById(id);
const FA_FALLBACK = { anger: 'خشم', fear: 'ترس', happiness: 'شادی', neutral: 'خنثی', sadness: 'غم',
  surprise: 'تعجب', boredom: 'ملال', disgust: 'انزجار' };
const CHUNK_SAMPLES = 4000; // 0.25 s at 16 kHz per WebSocket message
let labels = Object.keys(FA_FALLBACK).slice(0, 6);
let fa = { ...FA_FALLBACK };

function el(tag, attrs = {}, text = '') {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

function labelNode(label) {
  const d = el('div', { class: 'name' });
  d.append(el('span', { lang: 'fa', dir: 'rtl' }, fa[label] || label),
    el('span', { class: 'en', lang: 'en', dir: 'ltr' }, label));
  return d;
}

function emotionText(label) {
  return `${fa[label] || label} · ${label}`;
}

function showError(msg) {
  const e = $('error');
  e.textContent = msg;
  e.hidden = !msg;
}

// One row per label: name, bar, percentage. `probs` maps English label -> probability.
function renderBars(container, probs, top) {
  container.replaceChildren();
  for (const l of labels) {
    const p = probs ? probs[l] || 0 : 0;
    const track = el('div', { class: 'track' });
    const fill = el('div', { class: 'fill' });
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    track.append(fill);
    const row = [labelNode(l), track, el('div', { class: 'pct' }, probs ? `${(100 * p).toFixed(1)}%` : '')];
    if (l === top) row.forEach((c) => c.classList.add('row-top'));
    track.dataset.label = l;
    container.append(...row);
  }
}

function renderMembers(container, members) {
  container.replaceChildren();
  if (!members) return;
  for (const [name, dist] of Object.entries(members)) {
    const best = Object.entries(dist).sort((a, b) => b[1] - a[1])[0];
    container.append(el('div', { lang: 'en', dir: 'ltr' },
      `${name}: ${best[0]} (${fa[best[0]] || ''}) ${(100 * best[1]).toFixed(1)}%`));
  }
}

async function loadModel() {
  try {
    const r = await fetch('/v1/model');
    const m = await r.json();
    labels = m.labels;
    m.labels.forEach((l, i) => { fa[l] = m.labels_fa[i]; });
    const vad = m.vad && m.vad.name;
    const info = $('model-info');
    info.replaceChildren(el('small', { lang: 'en', dir: 'ltr' },
      `model ${m.version} · members ${m.members.join(' + ')} · window ${m.window_seconds} s · ` +
      `backend ${m.backend} · VAD ${vad}`));
  } catch (e) {
    showError(`could not read /v1/model: ${e}`);
  }
  renderBars($('live-bars'), null, null);
}

// ---- file upload ---------------------------------------------------------------------------
async function submitFile(file) {
  if (!file) return;
  showError('');
  const status = $('file-status');
  status.dataset.state = 'busy';
  status.textContent = `در حال تحلیل… (analysing ${file.name})`;
  const fd = new FormData();
  fd.append('file', file, file.name);
  try {
    const r = await fetch('/v1/predict?lang=en', { method: 'POST', body: fd });
    const j = await r.json();
    if (!r.ok) {
      status.dataset.state = 'error';
      status.textContent = `خطا · error ${r.status}: ${j.error}`;
      showError(typeof j.detail === 'string' ? j.detail : JSON.stringify(j.detail));
      return;
    }
    status.dataset.state = 'done';
    status.textContent = '';
    const res = $('result');
    res.hidden = false;
    res.dataset.state = 'done';
    const top = $('top-emotion');
    top.textContent = emotionText(j.emotion);
    top.dataset.label = j.emotion;
    const win = j.windows ? ` · ${j.windows.length} windows` : '';
    $('result-meta').textContent = `${j.file} · ${j.duration} s · ${(100 * j.confidence).toFixed(1)}%${win}`;
    renderBars($('result-bars'), j.probabilities, j.emotion);
    renderMembers($('result-members'), j.members);
  } catch (e) {
    status.dataset.state = 'error';
    status.textContent = `خطا · error: ${e}`;
  }
}

$('file-input').addEventListener('change', (ev) => submitFile(ev.target.files[0]));
const zone = $('drop-zone');
zone.addEventListener('dragover', (ev) => { ev.preventDefault(); zone.classList.add('over'); });
zone.addEventListener('dragleave', () => zone.classList.remove('over'));
zone.addEventListener('drop', (ev) => {
  ev.preventDefault();
  zone.classList.remove('over');
  submitFile(ev.dataTransfer.files[0]);
});

// ---- live microphone -----------------------------------------------------------------------
let live = null; // {ws, ctx, stream, nodes}

function setLiveStatus(state, fa_, en) {
  const s = $('live-status');
  s.dataset.state = state;
  s.replaceChildren(document.createTextNode(`${fa_} · `), el('span', { class: 'en', lang: 'en', dir: 'ltr' }, en));
}

function onLiveMessage(msg) {
  if (msg.type === 'ready') {
    setLiveStatus('listening', 'در حال شنیدن', 'listening');
  } else if (msg.type === 'result') {
    const box = $('live-result');
    box.dataset.count = String(Number(box.dataset.count) + 1);
    box.dataset.last = msg.silence ? 'silence' : 'speech';
    $('live-meta').textContent = `t = ${msg.time.toFixed(1)} s · speech ${msg.speech_seconds} s`;
    if (msg.silence) {
      setLiveStatus('silence', 'سکوت', 'silence');
      $('live-emotion').textContent = 'سکوت · silence';
      $('live-emotion').dataset.label = '';
      $('live-bars').classList.add('faded');
    } else {
      setLiveStatus('speech', 'گفتار', 'speech');
      $('live-emotion').textContent = emotionText(msg.emotion);
      $('live-emotion').dataset.label = msg.emotion;
      $('live-bars').classList.remove('faded');
      renderBars($('live-bars'), msg.probabilities, msg.emotion);
      renderMembers($('live-members'), msg.members);
    }
  } else if (msg.type === 'error') {
    showError(`${msg.error}: ${msg.detail}`);
    if (msg.fatal) stopLive('error');
  }
}

async function startLive() {
  showError('');
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setLiveStatus('error', 'میکروفون در دسترس نیست', 'no microphone (needs localhost or HTTPS)');
    return;
  }
  setLiveStatus('connecting', 'در حال اتصال', 'connecting');
  const btn = $('record-button');
  btn.classList.add('stop');
  btn.replaceChildren(document.createTextNode('توقف · '), el('span', { lang: 'en', dir: 'ltr' }, 'Stop'));
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
    const ctx = new AudioContext();
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/v1/stream`);
    ws.binaryType = 'arraybuffer';
    live = { ws, ctx, stream, nodes: [] };
    ws.onopen = () => ws.send(JSON.stringify({ sample_rate: 16000, format: 'int16', hop_seconds: 1.0, lang: 'en' }));
    ws.onmessage = (ev) => onLiveMessage(JSON.parse(ev.data));
    ws.onclose = (ev) => { if (live && live.ws === ws) stopLive(ev.code === 1000 ? 'idle' : 'error', ev); };
    const send = (buf) => { if (ws.readyState === WebSocket.OPEN) ws.send(buf); };
    const src = ctx.createMediaStreamSource(stream);
    const mute = ctx.createGain();
    mute.gain.value = 0; // the graph must reach the destination to be pulled; nothing is heard
    mute.connect(ctx.destination);
    if (ctx.audioWorklet) {
      await ctx.audioWorklet.addModule('/static/capture-worklet.js');
      const node = new AudioWorkletNode(ctx, 'pcm16k-capture',
        { processorOptions: { chunkSamples: CHUNK_SAMPLES }, channelCount: 1, channelCountMode: 'explicit' });
      node.port.onmessage = (ev) => send(ev.data);
      src.connect(node).connect(mute);
      live.nodes.push(src, node, mute);
    } else { // older browsers: ScriptProcessor on the main thread
      const down = new Downsampler(ctx.sampleRate, 16000);
      const chunker = new Int16Chunker(CHUNK_SAMPLES);
      const node = ctx.createScriptProcessor(4096, 1, 1);
      node.onaudioprocess = (ev) => chunker.push(down.process(ev.inputBuffer.getChannelData(0)), send);
      src.connect(node).connect(mute);
      live.nodes.push(src, node, mute);
    }
    await ctx.resume();
  } catch (e) {
    stopLive('error');
    showError(`microphone: ${e.message || e}`);
  }
}

function stopLive(state = 'idle') {
  const l = live;
  live = null;
  if (l) {
    l.nodes.forEach((n) => { try { n.disconnect(); } catch (_) { /* already */ } });
    l.stream.getTracks().forEach((t) => t.stop());
    l.ctx.close().catch(() => {});
    if (l.ws.readyState <= WebSocket.OPEN) l.ws.close(1000);
  }
  if (state === 'error') setLiveStatus('error', 'خطا', 'error');
  else setLiveStatus('idle', 'آماده', 'idle');
  const btn = $('record-button');
  btn.classList.remove('stop');
  btn.replaceChildren(document.createTextNode('شروع ضبط · '), el('span', { lang: 'en', dir: 'ltr' }, 'Record'));
}

$('record-button').addEventListener('click', () => (live ? stopLive() : startLive()));
loadModel();

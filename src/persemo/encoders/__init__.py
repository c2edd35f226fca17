"""Pretrained speech encoders used as frozen feature extractors (``persemo.encoders.whisper``)."""

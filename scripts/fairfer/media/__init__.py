"""Decoding clips: frames sampled from a video (:mod:`.video`) and log-mel spectrograms or
eGeMAPS functionals of a voice (:mod:`.audio`), both through PyAV's bundled FFmpeg."""

"""Pixels: untrusted decoding and PNG encoding, MATLAB-compatible resize, degradations, SR metrics."""

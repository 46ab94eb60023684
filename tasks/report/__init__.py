"""Reports: one self-contained HTML file from sections, and the plots in it."""

"""Enhancing the catalog (and ad-hoc folders) with the champion models: the pure core of the enhance flow."""

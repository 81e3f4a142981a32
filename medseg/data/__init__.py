"""Datasets: finding cases, decoding masks, splitting, preprocessing, sampling, augmentation, the phantom."""

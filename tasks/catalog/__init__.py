"""The catalog manifest as training and evaluation data: current rows, labels, filters, splits, squared images."""

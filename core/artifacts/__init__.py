"""What a trained model becomes: the exported files, predictions from them alone, the bundle."""

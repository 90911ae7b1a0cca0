"""Predictor models: graphs -> embeddings (encoder), embeddings -> target weights (hypernetwork),
embeddings -> accuracy (regressor), and their composition per variant (predictor)."""

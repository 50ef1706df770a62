"""Machine-learning assets downstream of Gold."""

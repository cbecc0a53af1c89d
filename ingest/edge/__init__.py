"""The HTTP edge: views, parsing, the fast-path handler, and the one map from errors to answers."""

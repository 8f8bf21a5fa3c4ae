"""The built-in experiments: the two seed notebooks' networks, done right."""

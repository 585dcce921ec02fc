"""Rule files: schema, CEL compilation, loading with line numbers, lint and rule tests.

Pure except for reading files.
"""

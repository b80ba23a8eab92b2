"""Weight interchange with other frameworks; each module imports its peer lazily."""

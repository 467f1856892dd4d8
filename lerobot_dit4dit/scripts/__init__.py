"""Command lines of the plugin (`[project.scripts]` in pyproject.toml), apart from the library code they
drive."""

#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ingestsite.settings")
    from django.core.management import execute_from_command_line

    import celery_app  # noqa: F401  (binds shared tasks to the configured app)

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()

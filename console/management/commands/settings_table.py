"""Write README.md's configuration table from the settings' declarations (``console/settings/table.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from console.settings import table


class Command(BaseCommand):
    help = "Rewrite README.md's configuration table from the settings' declarations (--check: only compare)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--check", action="store_true", help="Fail if README.md's table is out of date.")
        parser.add_argument("--readme", type=Path, default=table.README)

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["readme"]
        current = path.read_text()
        try:
            wanted = table.replaced(current, table.render())
        except table.TableMarkersMissing as exc:
            raise CommandError(str(exc)) from None
        if wanted == current:
            self.stdout.write(f"{path.name}: the configuration table is up to date.")
            return
        if options["check"]:
            raise CommandError(
                f"{path.name}'s configuration table is out of date: run `python manage.py settings_table`."
            )
        path.write_text(wanted)
        self.stdout.write(f"{path.name}: configuration table rewritten ({len(table.declared())} variables).")

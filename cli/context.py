"""What every command gets: the data directory, and the catalogue opened for reading."""

from __future__ import annotations

from pathlib import Path

from store.catalogue import Catalogue
from store.home import Home


class Context:
    def __init__(self, home: Path) -> None:
        self.home = Home(home)

    def catalogue(self) -> Catalogue:
        self.home.open(create=False)
        return Catalogue(self.home.catalogue_path)

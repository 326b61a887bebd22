"""Everything that talks to pyace or pacemaker (see the package docstring for the map)."""

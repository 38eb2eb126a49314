"""The package version, in a module of its own: ``dsnet_zoo.hub`` records it in every ``config.json`` and imports
it at module level, which ``from dsnet_zoo import __version__`` could not do while ``dsnet_zoo`` is importing."""
__version__ = "0.1.0"

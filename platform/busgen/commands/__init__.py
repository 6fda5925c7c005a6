"""Commands: one module per command family (data, train, generate, evaluate, studies, demo, serve).

Each family holds its run configs, run functions and registry entries side by side;
`busgen.commands.registry` collects them for the faces (the ``busgen`` CLI and ``jobs/*.py``).
"""

"""Adapters that run a gradcheck ``Monitor`` inside the trainers people use.

Each module imports its trainer's package, so import the one you need by its module path
(``gradcheck_cli.integrations.lightning``, ``gradcheck_cli.integrations.huggingface``); importing
``gradcheck_cli`` never imports a trainer.
"""

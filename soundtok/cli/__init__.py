"""The ``soundtok`` command line: one typer app, one small module per group of commands."""

"""The command lines: the study scripts' flags and main (parser.py, args.py, main.py), the kdray
command (commands.py), config files and one-line errors. The top layer: imports anything below."""

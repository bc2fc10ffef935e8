import sys

try:
    from mct.cli import main
except KeyboardInterrupt:  # Ctrl-C while the CLI is still being imported
    sys.stderr.write("aborted\n")
    sys.exit(130)

if __name__ == "__main__":
    main()

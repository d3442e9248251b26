from edgekit.cli.main import main

if __name__ == "__main__":  # a multiprocessing child imports this module again
    main()

from searchgym.cli import main

main()

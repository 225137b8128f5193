from gradcheck_cli.cli.main import main

main()

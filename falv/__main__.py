from falv.cli.main import main

main()

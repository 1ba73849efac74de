from codedfarm.cli import main

main()

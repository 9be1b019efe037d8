from gitlab_mci.cli import main

main()

from batchrun._cli import main

main()

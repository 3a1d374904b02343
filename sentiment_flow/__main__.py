from sentiment_flow.cli import main

main()

from gguf_trim.cli import main

main()

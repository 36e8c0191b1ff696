"""From the user's text files to symbol ids: vocabularies, documents, prepared corpora, lanes."""

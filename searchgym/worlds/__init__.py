"""Task sets (worlds): a corpus plus questions, strategies and scripted demonstrators."""

"""Where the data enters: image files, folder-per-class sets (cache, splits), Kylberg, the demo set, batches."""

"""The data path: from video files to batches of uint8 clips.

- `files.py`     find labelled videos (class folders, train/val/test folders, a CSV manifest), split them
- `labels.py`    multi-label sets: a manifest cell read into labels, their split, multi-hot targets
- `sampling.py`  which frames a clip takes (index arithmetic only); `views.py` multi-view clips
- `video.py`     decoding with OpenCV (the only module that opens a video); `diagnose.py` why one will not open
- `decoder.py`   the watchdog: decoding in a child process, abandoned when a video stalls; `shared.py` the
                 memory a child writes frames into
- `cache.py`     the bounded decode cache (what is kept); `entry.py` one entry's file (JPEG frames); `fill.py` fills it
- `datasets.py`  serving clips to a DataLoader: the cache, bad videos replaced, batches, the epoch's order
- `feed.py`      predict's and embed's batches, decoded by a child straight into shared memory
"""

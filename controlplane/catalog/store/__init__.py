"""The model store: model sources as URIs, each read by a resolver behind one interface.

``uris`` parses and checks a source (``file://``, ``s3://``, ``hf://``; a plain absolute path is
a ``file://``); ``resolvers`` lists a source's files and reads them (whole, streamed or by byte
range) without Django; ``metadata`` reads config, tokenizer files and safetensors headers by
range reads and builds the manifest (files, sizes, sha256) that nodes verify their cache with.
"""

"""A dataset folder, as the trainer reads it and `unast compress --data` writes it (no torch).

A folder holds train.txt and heldout.txt (UTF-8). Each file is a sequence of documents separated by
the end-of-text marker (EOS); a file without it is one document. The trainer streams each document's
tokens in the teacher's tokenizer followed by the end-of-text token (when the tokenizer has it), as it
streams each play of the built-in corpus; `token_ids` is that stream, so a client counts the tokens a
job will see with the same function the trainer uses.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer

FILES = ("train.txt", "heldout.txt")
EOS = "<|endoftext|>"


def documents(text: str) -> list[str]:
    """A dataset file's documents: the text between end-of-text markers (empty pieces dropped)."""
    return [piece for piece in text.split(EOS) if piece]


def token_ids(tokenizer: Tokenizer, texts: Iterable[str]) -> list[int]:
    """One token stream: every text followed by the end-of-text token (when the tokenizer has one)."""
    eos = tokenizer.token_to_id(EOS)
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(list(texts)):
        ids.extend(encoding.ids)
        if eos is not None:  # a foreign tokenizer may lack ours
            ids.append(eos)
    return ids

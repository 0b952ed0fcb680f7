"""Memory images: the format the compiler emits and the golden model runs on,
and their two transports (the host's 32-bit word stream and `$readmemh` text).

An image set is a dict `memory id -> list of banks` (ids and bank counts of
`AcceleratorConfig.memory_shapes()`); a bank is either a dict
`address -> int` (sparse: absent addresses are 0) or a 1-D numpy integer
array indexed by address. Entries are unsigned: signed fields are stored in
two's complement by the encoders of `sw/compile/encoding.py`.
"""

import numpy as np

HOST_WORD_BITS = 32


def empty_images(config):
    """An image set with every bank empty."""
    return {memory: [dict() for _ in range(banks)]
            for memory, (_, banks, _, _) in config.memory_shapes().items()}


def read_entry(bank, address):
    """Entry `address` of a sparse or dense bank (0 where absent)."""
    if isinstance(bank, dict):
        return bank.get(int(address), 0)
    return int(bank[int(address)])


def sparse(bank):
    """A bank as a dict holding its non-zero entries."""
    if isinstance(bank, dict):
        return {int(a): int(v) for a, v in bank.items() if v}
    nonzero = np.flatnonzero(bank)
    return dict(zip(nonzero.tolist(), np.asarray(bank)[nonzero].tolist()))


def merge_images(*image_sets):
    """One image set holding every entry of the given sets (later sets win)."""
    merged = {}
    for images in image_sets:
        for memory, banks in images.items():
            target = merged.setdefault(memory, [dict() for _ in banks])
            for index, bank in enumerate(banks):
                target[index].update(sparse(bank) if not isinstance(bank, dict) else bank)
    return merged


def runs(bank):
    """`(start, [entries])` for each run of consecutive addresses present in a
    sparse bank (zeros inside a dense bank's range are kept)."""
    if not isinstance(bank, dict):
        return [(0, [int(v) for v in bank])] if len(bank) else []
    result = []
    for address in sorted(bank):
        if result and address == result[-1][0] + len(result[-1][1]):
            result[-1][1].append(int(bank[address]))
        else:
            result.append((address, [int(bank[address])]))
    return result


def entry_words(value, width):
    """One entry as `ceil(width / 32)` little-endian 32-bit words."""
    count = -(-width // HOST_WORD_BITS)
    return [(int(value) >> (HOST_WORD_BITS * i)) & 0xFFFFFFFF for i in range(count)]


def host_word_stream(images, config):
    """The host's transfer of an image set: a list of segments
    `(memory id, bank, start address, words)`, one per run of consecutive
    entries, `words` the entries in address order, each as `ceil(width/32)`
    little-endian 32-bit words (docs/isa.md, "Memories")."""
    shapes = config.memory_shapes()
    segments = []
    for memory in sorted(images):
        _, _, width, depth = shapes[memory]
        for bank_index, bank in enumerate(images[memory]):
            for start, entries in runs(bank):
                if start + len(entries) > depth:
                    raise ValueError(f"memory {memory} bank {bank_index}: entries beyond depth "
                                     f"{depth}")
                words = [word for value in entries for word in entry_words(value, width)]
                segments.append((memory, bank_index, start, words))
    return segments


def readmemh_text(bank, width):
    """A bank as `$readmemh` text: `@address` (hex) before each run, then one
    entry per line in hex, `ceil(width / 4)` digits."""
    digits = -(-width // 4)
    lines = []
    for start, entries in runs(bank):
        lines.append(f"@{start:x}")
        lines.extend(f"{value:0{digits}x}" for value in entries)
    return "\n".join(lines) + "\n"

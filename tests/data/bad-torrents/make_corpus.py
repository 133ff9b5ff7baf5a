#!/usr/bin/env python3
"""Writes the malformed/hostile torrent corpus and expected.json (file -> substring of the error).
Run from this directory: python3 make_corpus.py"""
import hashlib, json


def enc(v):
    if isinstance(v, int):
        return b'i%de' % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b'%d:%s' % (len(v), v)
    if isinstance(v, list):
        return b'l' + b''.join(enc(x) for x in v) + b'e'
    if isinstance(v, dict):
        items = sorted(((k.encode() if isinstance(k, str) else k), x) for k, x in v.items())
        return b'd' + b''.join(enc(k) + enc(x) for k, x in items) + b'e'
    raise TypeError(v)


P = 16384
piece = hashlib.sha1(b'x' * 100).digest()


def v1(**info):
    base = {'name': 'ok', 'piece length': P, 'pieces': piece, 'length': 100}
    base.update(info)
    for k in [k for k, v in base.items() if v is None]:
        del base[k]
    return enc({'announce': 'http://127.0.0.1:1/a', 'info': base})


def multi(paths):
    return v1(length=None, files=[{'length': 50, 'path': p} for p in paths])


def v2(**info):
    base = {'name': 'ok', 'piece length': P, 'meta version': 2,
            'file tree': {'ok': {'': {'length': 100, 'pieces root': b'\x11' * 32}}}}
    base.update(info)
    return enc({'info': base})


good = v1()
corpus = {
    'truncated.torrent': (good[:len(good) // 2], 'truncated'),
    'empty.torrent': (b'', 'truncated'),
    'trailing.torrent': (good + b'garbage', 'trailing data'),
    'leading_zero_int.torrent': (good.replace(b'i100e', b'i0100e'), 'leading zeros'),
    'unsorted_keys.torrent': (b'd4:infod4:name2:ok6:lengthi1eee', 'not sorted'),
    'duplicate_key.torrent': (b'd4:infod4:name2:ok4:name2:okee', 'duplicate'),
    'not_a_dict.torrent': (b'l4:infoe', 'top level is not a dictionary'),
    'no_info.torrent': (enc({'announce': 'x'}), "missing 'info'"),
    'info_not_dict.torrent': (enc({'info': 5}), "'info' is not a dictionary"),
    'name_not_string.torrent': (v1(name=7), "'name' is not a string"),
    'negative_length.torrent': (v1(length=-5), 'negative length'),
    'absurd_length.torrent': (v1(length=1 << 62), 'absurd length'),
    'zero_piece_length.torrent': (v1(**{'piece length': 0}), 'absurd piece length'),
    'negative_piece_length.torrent': (v1(**{'piece length': -16384}), 'absurd piece length'),
    'pieces_not_multiple_of_20.torrent': (v1(pieces=piece + b'abc'), 'not a multiple of 20'),
    'wrong_piece_count.torrent': (v1(pieces=piece * 3), 'piece hashes for 100 bytes'),
    'pieces_wrong_type.torrent': (v1(pieces=5), "'pieces' is not a string"),
    'path_dotdot.torrent': (multi([['..', '..', 'etc', 'passwd']]), 'directory traversal'),
    'path_absolute.torrent': (multi([['/etc', 'passwd']]), 'path separator'),
    'path_slash_in_component.torrent': (multi([['a/../../b']]), 'path separator'),
    'path_empty_component.torrent': (multi([['a', '', 'b']]), 'empty path component'),
    'path_nul.torrent': (multi([['a\x00b']]), 'NUL'),
    'path_empty_list.torrent': (multi([[]]), 'empty path'),
    'name_dotdot.torrent': (v1(name='..'), 'directory traversal'),
    'files_not_list.torrent': (v1(length=None, files=5), "'files' is not a list"),
    'both_length_and_files.torrent': (v1(files=[{'length': 1, 'path': ['a']}]), "both 'length' and 'files'"),
    'v2_piece_length_not_pow2.torrent': (v2(**{'piece length': 20000}), 'not a power of two'),
    'v2_piece_length_too_small.torrent': (v2(**{'piece length': 8192}), 'not a power of two'),
    'v2_dotdot_in_tree.torrent': (v2(**{'file tree': {'..': {'': {'length': 1, 'pieces root': b'\x11' * 32}}}}), 'directory traversal'),
    'v2_bad_root_length.torrent': (v2(**{'file tree': {'ok': {'': {'length': 1, 'pieces root': b'\x11' * 5}}}}), 'not 32 bytes'),
    'v2_missing_piece_layer.torrent': (v2(**{'file tree': {'ok': {'': {'length': 100000, 'pieces root': b'\x11' * 32}}}}), 'piece layers'),
    'bad_meta_version.torrent': (v2(**{'meta version': 3}), 'unsupported meta version'),
    'deep_nesting.torrent': (b'l' * 100000 + b'e' * 100000, 'nested deeper'),
    'huge_string_length.torrent': (b'd4:info99999999999:x', 'truncated'),
    'path_duplicate.torrent': (multi([['a'], ['a']]), 'two files have the path'),
    'path_file_and_dir.torrent': (multi([['a'], ['a', 'b']]), 'both a file and a directory'),
    'path_control_newline.torrent': (multi([['a\x00\nb\x1b[2J']]), 'NUL'),
}
expected = {}
for name, (data, err) in corpus.items():
    with open(name, 'wb') as f:
        f.write(data)
    expected[name] = err
with open('expected.json', 'w') as f:
    json.dump(expected, f, indent=1, sort_keys=True)
print(len(corpus), 'files')

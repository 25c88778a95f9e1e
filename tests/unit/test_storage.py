"""Storage layer: the same behaviour on local folders and on S3 (a moto server on loopback)."""

from __future__ import annotations

import hashlib
import posixpath
import unicodedata
from concurrent.futures import ThreadPoolExecutor

import fsspec
import pytest
import s3fs

from dva.errors import MissingWeightsError, StorageError
from dva.storage import (
    atomic_output,
    content_digest,
    exists,
    join,
    local_path,
    list_files,
    open_file,
    output_key,
    redact,
    remove_prefix,
    shown,
    sweep_partials,
    video_id,
    write_bytes_atomic,
)


def _all_files(root: str) -> list[str]:
    """Every file under `root`, `.partial/` ones included (bypassing `list_files`)."""
    fs, path = fsspec.core.url_to_fs(root)
    fs.invalidate_cache()
    return [p[len(path.rstrip("/")) + 1 :] for p in fs.find(path)]


def _read(uri: str) -> bytes:
    with open_file(uri) as f:
        return f.read()


def test_atomic_output_shows_the_file_only_after_commit(storage_root):
    target = join(storage_root, "out", "clip.mp4")
    with atomic_output(target) as tmp:
        assert tmp.suffix == ".mp4"
        tmp.write_bytes(b"x" * 100_000)
        assert not exists(target)
        assert list_files(storage_root) == []
    assert _read(target) == b"x" * 100_000
    assert _all_files(storage_root) == ["out/clip.mp4"]  # the temporary file is gone
    assert not tmp.exists()


def test_failure_inside_atomic_output_leaves_no_final_and_no_temporary(storage_root):
    kept = join(storage_root, "kept.bin")
    write_bytes_atomic(kept, b"old")
    fresh = join(storage_root, "fresh.bin")
    for target in (kept, fresh):
        with pytest.raises(RuntimeError, match="encoder died"):
            with atomic_output(target) as tmp:
                tmp.write_bytes(b"half-written")
                raise RuntimeError("encoder died")
        assert not tmp.exists()
    assert _read(kept) == b"old"
    assert not exists(fresh)
    assert _all_files(storage_root) == ["kept.bin"]


def test_concurrent_writers_to_one_key_leave_one_whole_version(storage_root):
    target = join(storage_root, "same.bin")
    payloads = [bytes([i]) * 200_000 for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write_bytes_atomic, [target] * 4, payloads))
    assert _read(target) in payloads
    assert _all_files(storage_root) == ["same.bin"]


def test_concurrent_writers_each_have_their_own_temporary_file(storage_root):
    target = join(storage_root, "edit.safetensors")
    with atomic_output(target) as first:
        with atomic_output(target) as second:  # another worker writing the same artefact meanwhile
            assert first != second and first.suffix == second.suffix == ".safetensors"
            first.write_bytes(b"first writer")
            second.write_bytes(b"second writer")
        assert _read(target) == b"second writer" and first.read_bytes() == b"first writer"
    assert _read(target) == b"first writer"  # the last to commit wins, whole
    assert _all_files(storage_root) == ["edit.safetensors"]


@pytest.fixture
def s3_writes(monkeypatch) -> list[tuple[str, str]]:
    """(operation, key) of every S3 request that creates, copies or deletes an object, in order."""
    writes = []
    call_s3 = s3fs.S3FileSystem._call_s3

    async def recording(self, method, *args, **kwargs):
        if method in ("put_object", "create_multipart_upload", "copy_object", "delete_object", "delete_objects"):
            writes.append((method, kwargs.get("Key") or str(kwargs.get("Delete", ""))))
        return await call_s3(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", recording)
    return writes


def test_remote_atomic_output_uploads_straight_to_the_final_key(s3_bucket, s3_writes):
    target = join(s3_bucket, "out", "videos", "clip.mp4")
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"v" * 300_000)
        assert not exists(target) and _all_files(s3_bucket) == [] and s3_writes == []
    assert s3_writes == [("put_object", "out/videos/clip.mp4")]  # one PUT: no `.partial/` object, copy or delete
    assert _all_files(s3_bucket) == ["out/videos/clip.mp4"] and _read(target) == b"v" * 300_000
    assert not tmp.exists()


def test_remote_write_that_fails_sends_nothing_to_the_store(s3_bucket, s3_writes):
    target = join(s3_bucket, "kept.bin")
    write_bytes_atomic(target, b"old")
    with pytest.raises(RuntimeError, match="encoder died"):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half-written")
            raise RuntimeError("encoder died")
    assert s3_writes == [("put_object", "kept.bin")]  # only the first, whole write
    assert _read(target) == b"old" and _all_files(s3_bucket) == ["kept.bin"]


def test_list_files_is_recursive_sorted_filtered_and_hides_partials(storage_root):
    for name in ("b.mp4", "a/x.MOV", "a/deep/z.mp4", "notes.txt", "a b/é.mp4", "._b.mp4", "a/.b.mp4.partial-1.mp4"):
        write_bytes_atomic(join(storage_root, name), b"1")
    fs, path = fsspec.core.url_to_fs(join(storage_root, "a", ".partial", "tmp.mp4"))
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    fs.pipe_file(path, b"half")
    videos = list_files(storage_root, (".mp4", ".mov"))
    assert videos == [join(storage_root, n) for n in ("a b/é.mp4", "a/deep/z.mp4", "a/x.MOV", "b.mp4")]
    assert len(list_files(storage_root)) == 5
    assert list_files(join(storage_root, "a"), (".mp4",)) == [join(storage_root, "a/deep/z.mp4")]
    assert list_files(join(storage_root, "missing")) == []


def test_exists_for_files_folders_and_missing(storage_root):
    write_bytes_atomic(join(storage_root, "d", "f.bin"), b"1")
    assert exists(join(storage_root, "d", "f.bin"))
    assert exists(join(storage_root, "d"))
    assert not exists(join(storage_root, "d", "g.bin"))
    assert not exists(join(storage_root, "nothing"))


def test_remove_prefix_deletes_only_that_prefix(storage_root):
    for name in ("work/a/1.npy", "work/2.npy", "work2/keep.npy"):
        write_bytes_atomic(join(storage_root, name), b"1")
    remove_prefix(join(storage_root, "work"))
    remove_prefix(join(storage_root, "never-written"))
    assert list_files(storage_root) == [join(storage_root, "work2/keep.npy")]
    assert not exists(join(storage_root, "work"))


def test_missing_bucket_is_a_storage_error_naming_it(s3_server):
    uri = "s3://no-such-bucket-dva/videos"
    with pytest.raises(StorageError, match="no-such-bucket-dva/videos.*does not exist.*bucket name"):
        list_files(uri)
    with pytest.raises(StorageError, match="no-such-bucket-dva/out.bin"):
        write_bytes_atomic("s3://no-such-bucket-dva/out.bin", b"1")
    with pytest.raises(StorageError, match="does not exist"):
        open_file(uri + "/a.mp4")


def test_unreachable_endpoint_error_names_the_input_and_hides_endpoint_secrets(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://admin:hunter2-secret@127.0.0.1:1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        with pytest.raises(StorageError) as info:
            list_files("s3://videos/in")
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    message = str(info.value)
    assert "s3://videos/in" in message and "AWS_ENDPOINT_URL" in message
    assert "hunter2" not in message and "dva-test-secret-key" not in message


def test_local_missing_file_error_says_it_does_not_exist(tmp_path):
    with pytest.raises(StorageError, match=f"{tmp_path}/nope.mp4.*does not exist"):
        open_file(tmp_path / "nope.mp4")


PREFIXES = ["/data/in", "s3://bucket/in"]
HOSTILE = [
    "a/../../etc/passwd",
    "../../../../x.mp4",
    "/abs/x.mp4",
    "//double//slash.mp4",
    "..\\..\\windows.mp4",
    "a/\x00..\x1b/b.mp4",
    ".partial/x.mp4",
    "\u202egnp.mp4",
    "..",
    "",
]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("name", HOSTILE)
def test_output_keys_never_leave_the_output_prefix(prefix, name):
    key = output_key(join(prefix, name) if name.startswith("/") else name, prefix)
    assert key and not key.startswith("/") and "\\" not in key
    parts = key.split("/")
    assert all(p and not p.startswith(".") for p in parts)
    assert not any(unicodedata.category(ch)[0] == "C" for ch in key)
    assert posixpath.normpath(posixpath.join("/out", key)).startswith("/out/")


@pytest.mark.parametrize("prefix", PREFIXES)
def test_clean_names_keep_their_path_and_odd_ones_get_a_hash(prefix):
    assert output_key(join(prefix, "people/spaces in name.mp4"), prefix) == "people/spaces in name.mp4"
    assert output_key(join(prefix, "日本/é.mp4"), prefix) == "日本/é.mp4"  # NFC letters are kept as they are
    nfd = output_key(join(prefix, "e\u0301.mp4"), prefix)
    assert unicodedata.is_normalized("NFC", nfd) and nfd.startswith("é-") and nfd.endswith(".mp4")
    assert output_key(join(prefix, "a\x07b.mp4"), prefix).startswith("ab-")
    outside = output_key("/elsewhere/x.mp4", prefix)
    assert outside.startswith("elsewhere/x-") and outside == output_key("/elsewhere/x.mp4", prefix)
    assert len(output_key(join(prefix, "a" * 400 + ".mp4"), prefix).encode()) < 255


@pytest.mark.parametrize("prefix", PREFIXES)
def test_inputs_that_normalise_alike_get_different_keys(prefix):
    names = ["x.mp4", " x.mp4", "x\u200b.mp4", "x\x01.mp4", ".x.mp4", "_x.mp4", "\u00e9.mp4", "e\u0301.mp4"]
    if prefix.startswith("s3://"):  # distinct S3 keys, but one and the same local file
        names += ["./x.mp4", "sub/../x.mp4", "/x.mp4"]
    keys = [output_key(f"{prefix}/{n}", prefix) for n in names]
    assert len(set(keys)) == len(names), keys
    assert keys == [output_key(f"{prefix}/{n}", prefix) for n in names]  # deterministic


def test_video_id_is_stable_per_location():
    assert video_id("/data/in/x.mp4") == video_id("file:///data/in/./x.mp4") == video_id("/data/in/x.mp4")
    assert video_id("s3://key:secret@b/x.mp4") == video_id("s3://b/x.mp4") != video_id("s3://b/y.mp4")
    assert len(video_id("s3://b/x.mp4")) == 12


def test_redact_removes_uri_credentials_signatures_and_env_secrets(monkeypatch):
    monkeypatch.setenv("DVA_TEST_API_TOKEN", "tok-9f8e7d6c5b4a")
    monkeypatch.setenv("DVA_TEST_SHORT_TOKEN", "1")
    text = redact(
        "s3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI@bucket/a.mp4 failed; "
        "https://b.s3.amazonaws.com/k.mp4?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F2024&X-Amz-Signature=deadbeef&v=1 "
        "token tok-9f8e7d6c5b4a after 1 try"
    )
    for secret in ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI", "deadbeef", "tok-9f8e7d6c5b4a"):
        assert secret not in text
    assert "s3://***@bucket/a.mp4" in text and "&v=1" in text and "after 1 try" in text


@pytest.mark.parametrize("after", [")", ",", ";", ".", "]", ">", "'", " "])
def test_redact_keeps_the_character_after_a_signature(after):
    text = f"(see https://b/k.mp4?X-Amz-Signature=dead%2Fbe.ef-1{after} next"
    assert redact(text) == f"(see https://b/k.mp4?X-Amz-Signature=***{after} next"


HOSTILE_USERINFO = [  # (URI, what must not be printed)
    ("s3://KEYMARK:abc/SECRETMARK@bucket/x.mp4", ["KEYMARK", "SECRETMARK"]),  # a `/` in the secret (AWS secrets)
    ("s3://KEYMARK:ab:c/SEC@RETMARK@bucket/x.mp4", ["KEYMARK", "RETMARK"]),  # `:` and `@` in the secret too
    ("s3://KEYMARK:abc%2FSECRETMARK%40x@bucket/x.mp4", ["KEYMARK", "SECRETMARK"]),  # percent-encoded
    ("https://KEYMARK:SECRETMARK@host:8080/a/me@home.mp4", ["KEYMARK", "SECRETMARK"]),  # an `@` after it: more hidden
    ("s3://KEYMARK@bucket/x.mp4", ["KEYMARK"]),  # a user alone
]


@pytest.mark.parametrize("uri, secrets", HOSTILE_USERINFO)
def test_redact_removes_user_info_whatever_it_holds(uri, secrets):
    for text in (f"cannot open {uri}: gone", f"('{uri}',)", f"input={uri}"):
        assert not [s for s in secrets if s in redact(text)], redact(text)
        assert "://***@" in redact(text)


def test_redact_removes_the_pieces_of_a_command_line_secret_that_a_library_quotes():
    """botocore takes the part of `s3://KEY:abc/SECRET@bucket/x` before the `/` for a bucket name."""
    quoted = 'Invalid bucket name "KEYMARK:abcd": no; key SECRETMARK@bucket/x.mp4; decoded abcd/SECRETMARK@x'
    for uri in ("input=s3://KEYMARK:abcd/SECRETMARK@bucket/x.mp4", "s3://KEYMARK:abcd%2FSECRETMARK@bucket/x.mp4"):
        text = redact(quoted, [uri])
        assert "KEYMARK" not in text and "SECRETMARK" not in text and "abcd" not in text, text


def test_redact_keeps_uris_without_user_info():
    for text in ("s3://bucket/me@home.mp4", "https://host/x.mp4?email=a@b.com", "s3://b/k.mp4 by a@b"):
        assert redact(text) == text


def test_shown_escapes_control_and_bidirectional_characters():
    key = "s3://b/a\x1b[2K\r[dva] done \u202ex.mp4\udcff\nnext\ttab é"
    assert shown(key) == r"s3://b/a\x1b[2K\r[dva] done \u202ex.mp4\udcff\nnext\ttab é"
    assert shown(shown(key)) == shown(key)  # printable text stays as it is
    assert shown("s3://K:SECRETMARK@b/\x07") == r"s3://***@b/\x07"


def test_storage_errors_are_redacted(s3_server, monkeypatch):
    monkeypatch.setenv("DVA_TEST_SECRET", "sekrit-value-42")
    with pytest.raises(StorageError) as info:
        list_files("s3://AKIAIOSFODNN7EXAMPLE:sekrit-value-42@bucket/x")
    assert "sekrit" not in str(info.value) and "AKIAIOSFODNN7EXAMPLE" not in str(info.value)
    assert "bucket/x" in str(info.value)


def test_sweep_partials_deletes_only_old_temporaries(storage_root):
    write_bytes_atomic(join(storage_root, "videos", "a.mp4"), b"done")
    for name in ("one", "two"):  # what killed writers leave behind
        with fsspec.open(join(storage_root, "videos", ".partial", name), "wb") as f:
            f.write(b"half")
    assert sweep_partials(storage_root, older_than_s=3600) == 0  # could still be some writer's
    assert sorted(_all_files(storage_root)) == ["videos/.partial/one", "videos/.partial/two", "videos/a.mp4"]
    assert sweep_partials(storage_root, older_than_s=0) == 2
    assert _all_files(storage_root) == ["videos/a.mp4"] and _read(join(storage_root, "videos", "a.mp4")) == b"done"
    assert sweep_partials(join(storage_root, "nothing-here"), older_than_s=0) == 0


def test_a_remote_weight_file_replaced_at_the_same_uri_is_fetched_again(s3_bucket, tmp_path, monkeypatch):

    monkeypatch.setenv("DVA_CACHE_DIR", str(tmp_path / "cache"))
    uri = f"{s3_bucket}/weights/model.safetensors"
    fs = s3fs.S3FileSystem()
    fs.pipe(uri, b"first version")
    assert local_path(uri, config_key="model.checkpoint").read_bytes() == b"first version"
    fs.pipe(uri, b"second version, replaced")
    assert local_path(uri, config_key="model.checkpoint").read_bytes() == b"second version, replaced"
    assert local_path(uri, config_key="model.checkpoint").read_bytes() == b"second version, replaced"
    fs.pipe(uri, b"third")
    first = content_digest(uri)
    fs.pipe(uri, b"fourth version")
    assert content_digest(uri) != first  # a new ETag
    copy = f"{s3_bucket}/elsewhere/model.safetensors"
    fs.pipe(copy, b"fourth version")
    assert content_digest(copy) == content_digest(uri)  # the server's ETag follows the bytes: nothing is downloaded


def test_a_remote_weight_file_that_fails_its_checksum_leaves_nothing_in_the_cache(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("DVA_CACHE_DIR", str(tmp_path / "cache"))
    uri = f"{s3_bucket}/weights/arcface.onnx"
    s3fs.S3FileSystem().pipe(uri, b"weights")
    with pytest.raises(MissingWeightsError, match="SHA-256 differs"):
        local_path(uri, config_key="model.identity_encoder.weights", sha256="0" * 64)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
    good = hashlib.sha256(b"weights").hexdigest()
    fetched = local_path(uri, config_key="model.identity_encoder.weights", sha256=good)
    assert fetched.read_bytes() == b"weights"
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == [fetched]


def test_content_digest_follows_the_bytes_not_the_location(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"weights")
    b.write_bytes(b"weights")
    assert content_digest(str(a)) == content_digest(str(b))
    a.write_bytes(b"other weights")  # replaced in place: size and mtime change
    assert content_digest(str(a)) != content_digest(str(b))
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "x.dat").write_bytes(b"x")
    before = content_digest(str(tmp_path / "folder"))
    (tmp_path / "folder" / "x.dat").write_bytes(b"yy")
    assert content_digest(str(tmp_path / "folder")) != before

"""Specification of the official annotation-format parsers (fusion3d.data.formats).

Every fixture is written into tmp_path in the format as published; videos and frame folders are
empty placeholders, since parsers only check that they exist.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusion3d.data.formats import FORMATS, ParsedDataset, VideoRecord, flip_swap_pairs, parse


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def by_id(dataset: ParsedDataset) -> dict[str, VideoRecord]:
    return {r.video_id: r for r in dataset.records}


# --------------------------------------------------------------------------- UCF101

# An excerpt of the official classInd.txt: case-insensitive order, so Python's sorted() would
# put HammerThrow before Hammering and JumpRope before JumpingJack.
UCF_CLASSES = ["Haircut", "Hammering", "HammerThrow", "HandstandPushups", "JumpingJack", "JumpRope"]


def make_ucf(tmp_path: Path, newline: str = "\n") -> tuple[Path, Path]:
    root, ann = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    write(ann / "classInd.txt", "".join(f"{i} {c}\n" for i, c in enumerate(UCF_CLASSES, 1)), newline)
    for split in (1, 2, 3):
        train, test = [], []
        for i, c in enumerate(UCF_CLASSES, 1):
            file_class = "HandStandPushups" if c == "HandstandPushups" else c
            train.append(f"{c}/v_{file_class}_g0{split}_c01.avi {i}\n")
            test.append(f"{c}/v_{file_class}_g1{split}_c01.avi\n")
        write(ann / f"trainlist0{split}.txt", "".join(train), newline)
        write(ann / f"testlist0{split}.txt", "".join(test), newline)
        for line in train + test:
            touch(root / line.split()[0])
    return root, ann


def test_ucf101_labels_follow_classind_order_not_sorted_names(tmp_path):
    root, ann = make_ucf(tmp_path)
    ds = parse("ucf101", root, ann, "train")
    assert ds.classes == UCF_CLASSES
    assert ds.classes != sorted(UCF_CLASSES)
    labels = {r.video_id.split("/")[0]: r.label for r in ds.records}
    assert labels["Hammering"] == 1 and labels["HammerThrow"] == 2
    assert labels["JumpingJack"] == 4 and labels["JumpRope"] == 5


def test_ucf101_class_comes_from_directory_not_file_name(tmp_path):
    root, ann = make_ucf(tmp_path)
    for subset in ("train", "test"):
        ds = parse("ucf101", root, ann, subset)
        [rec] = [r for r in ds.records if "HandStandPushups" in r.path]
        assert ds.classes[rec.label] == "HandstandPushups"


def test_ucf101_record_has_absolute_path_and_id_without_suffix(tmp_path):
    root, ann = make_ucf(tmp_path)
    rec = by_id(parse("ucf101", root, ann, "train"))["Haircut/v_Haircut_g01_c01"]
    assert Path(rec.path).is_absolute()
    assert Path(rec.path) == (root / "Haircut/v_Haircut_g01_c01.avi").absolute()
    assert rec.num_frames is None


@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf101_each_split_reads_its_own_lists(tmp_path, split):
    root, ann = make_ucf(tmp_path)
    train = parse("ucf101", root, ann, "train", split=split)
    test = parse("ucf101", root, ann, "test", split=split)
    assert {r.video_id.rsplit("_", 2)[1] for r in train.records} == {f"g0{split}"}
    assert {r.video_id.rsplit("_", 2)[1] for r in test.records} == {f"g1{split}"}
    assert len(train.records) == len(test.records) == len(UCF_CLASSES)


@pytest.mark.parametrize("split", [0, 4])
def test_ucf101_split_outside_1_to_3_is_rejected(tmp_path, split):
    root, ann = make_ucf(tmp_path)
    with pytest.raises(ValueError, match="split"):
        parse("ucf101", root, ann, "train", split=split)


def test_ucf101_testlist_without_labels_takes_class_from_directory(tmp_path):
    root, ann = make_ucf(tmp_path)
    ds = parse("ucf101", root, ann, "test")
    assert [ds.classes[r.label] for r in ds.records] == UCF_CLASSES


def test_ucf101_val_and_validation_read_the_testlist(tmp_path):
    root, ann = make_ucf(tmp_path)
    test = parse("ucf101", root, ann, "test", split=2)
    assert parse("ucf101", root, ann, "val", split=2).records == test.records
    assert parse("ucf101", root, ann, "validation", split=2).records == test.records


def test_ucf101_crlf_and_blank_lines_are_ignored(tmp_path):
    root, ann = make_ucf(tmp_path, newline="\r\n")
    path = ann / "trainlist01.txt"
    path.write_bytes(b"\r\n" + path.read_bytes() + b"\r\n  \r\n")
    ds = parse("ucf101", root, ann, "train")
    assert ds.classes == UCF_CLASSES
    assert len(ds.records) == len(UCF_CLASSES) and not ds.missing
    assert all("\r" not in r.path for r in ds.records)


def test_ucf101_missing_video_is_reported_not_recorded(tmp_path):
    root, ann = make_ucf(tmp_path)
    (root / "JumpRope/v_JumpRope_g01_c01.avi").unlink()
    ds = parse("ucf101", root, ann, "train")
    assert "JumpRope/v_JumpRope_g01_c01" not in by_id(ds)
    assert ds.missing == [str((root / "JumpRope/v_JumpRope_g01_c01.avi").absolute())]


def test_ucf101_trainlist_label_disagreeing_with_directory_names_file_and_line(tmp_path):
    root, ann = make_ucf(tmp_path)
    write(ann / "trainlist01.txt", "Haircut/v_Haircut_g01_c01.avi 1\nHammering/v_Hammering_g01_c01.avi 3\n")
    with pytest.raises(ValueError, match=r"trainlist01\.txt:2:.*Hammering/v_Hammering_g01_c01\.avi 3"):
        parse("ucf101", root, ann, "train")


def test_ucf101_missing_list_file_error_names_expected_path(tmp_path):
    root, ann = make_ucf(tmp_path)
    (ann / "testlist03.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"ucfTrainTestlist[/\\]testlist03\.txt"):
        parse("ucf101", root, ann, "test", split=3)


# --------------------------------------------------------------------------- Kinetics

K6_HEADER = "label,youtube_id,time_start,time_end,split,is_cc\n"


def test_kinetics_six_column_csv_with_quoted_label_and_float_times(tmp_path):
    csv = write(
        tmp_path / "train.csv",
        K6_HEADER + '"playing guitar",abc-123_XY,14.0,24.0,train,0\n' + '"dining, eating",zzz,0,10,train,1\n',
    )
    touch(tmp_path / "videos/playing_guitar/abc-123_XY_000014_000024.mp4")
    touch(tmp_path / "videos/zzz_000000_000010.mp4")  # no class folder at all
    ds = parse("kinetics", tmp_path / "videos", csv, "train")
    assert ds.classes == ["dining, eating", "playing guitar"]
    recs = by_id(ds)
    assert recs["abc-123_XY_000014_000024"].label == 1
    assert recs["abc-123_XY_000014_000024"].path.endswith("playing_guitar/abc-123_XY_000014_000024.mp4")
    assert recs["zzz_000000_000010"].label == 0


def test_kinetics_five_column_csv_without_is_cc(tmp_path):
    csv = write(tmp_path / "val.csv", "label,youtube_id,time_start,time_end,split\nabseiling,aaa,3,13,val\n")
    touch(tmp_path / "v/abseiling/aaa_000003_000013.mp4")
    ds = parse("kinetics", tmp_path / "v", csv, "val")
    assert ds.records == [
        VideoRecord(str((tmp_path / "v/abseiling/aaa_000003_000013.mp4").absolute()), 0, "aaa_000003_000013")
    ]


def test_kinetics_columns_are_read_by_header_name(tmp_path):
    csv = write(tmp_path / "k.csv", "youtube_id,split,time_end,label,time_start\nqqq,train,9,bowling,1\n")
    touch(tmp_path / "v/qqq_000001_000009.mp4")
    assert by_id(parse("kinetics", tmp_path / "v", csv, "train"))["qqq_000001_000009"].label == 0


def test_kinetics_test_csv_without_label_column_gives_label_minus_one(tmp_path):
    csv = write(tmp_path / "test.csv", "youtube_id,time_start,time_end,split\nttt,5,15,test\n")
    touch(tmp_path / "v/ttt_000005_000015.webm")
    ds = parse("kinetics", tmp_path / "v", csv, "test")
    assert [r.label for r in ds.records] == [-1]


def test_kinetics_missing_clip_is_reported_and_skipped(tmp_path):
    csv = write(tmp_path / "train.csv", K6_HEADER + "bowling,have,1,11,train,0\nbowling,gone,2,12,train,0\n")
    touch(tmp_path / "v/bowling/have_000001_000011.mp4")
    ds = parse("kinetics", tmp_path / "v", csv, "train")
    assert [r.video_id for r in ds.records] == ["have_000001_000011"]
    assert len(ds.missing) == 1 and "gone_000002_000012" in ds.missing[0]


def test_kinetics_folder_indexes_classes_from_train_csv_so_val_agrees(tmp_path):
    ann = tmp_path / "kinetics400"
    write(
        ann / "train.csv",
        K6_HEADER + "zumba,t1,0,10,train,0\nabseiling,t2,0,10,train,0\nbowling,t3,0,10,train,0\n",
    )
    write(ann / "validate.csv", K6_HEADER + "zumba,v1,0,10,val,0\n")
    touch(tmp_path / "v/zumba/v1_000000_000010.mp4")
    ds = parse("kinetics", tmp_path / "v", ann, "val")
    assert ds.classes == ["abseiling", "bowling", "zumba"]
    assert [r.label for r in ds.records] == [2]


def test_kinetics_folder_accepts_val_csv_name(tmp_path):
    ann = tmp_path / "k"
    write(ann / "train.csv", K6_HEADER + "a,t1,0,10,train,0\nb,t2,0,10,train,0\n")
    write(ann / "val.csv", K6_HEADER + "b,v1,0,10,val,0\n")
    touch(tmp_path / "v/v1_000000_000010.mkv")
    assert [r.label for r in parse("kinetics", tmp_path / "v", ann, "validation").records] == [1]


def test_kinetics_missing_csv_error_names_expected_path(tmp_path):
    ann = tmp_path / "k"
    write(ann / "train.csv", K6_HEADER)
    (tmp_path / "v").mkdir()
    with pytest.raises(FileNotFoundError, match=r"validate\.csv"):
        parse("kinetics", tmp_path / "v", ann, "val")


def test_kinetics_bad_time_names_file_and_line(tmp_path):
    csv = write(tmp_path / "train.csv", K6_HEADER + "a,ok,0,10,train,0\na,bad,x,10,train,0\n")
    (tmp_path / "v").mkdir()
    with pytest.raises(ValueError, match=r"train\.csv:3:.*a,bad,x,10"):
        parse("kinetics", tmp_path / "v", csv, "train")


# --------------------------------------------------------------------------- Something-Something V2


def make_ssv2(tmp_path: Path) -> tuple[Path, Path]:
    root, ann = tmp_path / "20bn-something-something-v2", tmp_path / "labels"
    labels = {name: str(i) for i, name in enumerate(SSV2_LABELS)}
    write(ann / "something-something-v2-labels.json", json.dumps(labels))
    train = [
        {
            "id": "78687",
            "label": "holding potato next to vicks vaporub bottle",
            "template": "Holding [something] next to [something]",
            "placeholders": ["potato", "vicks"],
        },
        {
            "id": "42326",
            "label": "pulling pen from left to right",
            "template": "Pulling [something] from left to right",
            "placeholders": ["pen"],
        },
        {
            "id": "100904",
            "label": "putting a phone, a pen and a cup on the table",
            "template": "Putting [something], [something] and [something] on the table",
            "placeholders": ["a phone", "a pen", "a cup"],
        },
    ]
    write(ann / "something-something-v2-train.json", json.dumps(train))
    write(ann / "something-something-v2-test.json", json.dumps([{"id": "1420"}, {"id": "99"}]))
    for vid in ("78687", "42326", "100904", "1420", "99"):
        touch(root / f"{vid}.webm")
    return root, ann


def test_ssv2_label_comes_from_template_without_brackets_not_label_field(tmp_path):
    root, ann = make_ssv2(tmp_path)
    recs = by_id(parse("ssv2", root, ann, "train"))
    assert recs["78687"].label == SSV2_LABELS.index("Holding something next to something") == 19
    assert recs["42326"].label == 86
    assert recs["100904"].label == SSV2_LABELS.index(
        "Putting something, something and something on the table"
    )
    assert recs["42326"].path.endswith("42326.webm")


def test_ssv2_classes_are_in_labels_json_index_order(tmp_path):
    root, ann = make_ssv2(tmp_path)
    assert parse("ssv2", root, ann, "train").classes == SSV2_LABELS


def test_ssv2_test_json_with_only_ids_gives_label_minus_one(tmp_path):
    root, ann = make_ssv2(tmp_path)
    ds = parse("ssv2", root, ann, "test")
    assert [(r.video_id, r.label) for r in ds.records] == [("1420", -1), ("99", -1)]


def test_ssv2_missing_webm_is_reported(tmp_path):
    root, ann = make_ssv2(tmp_path)
    (root / "42326.webm").unlink()
    ds = parse("ssv2", root, ann, "train")
    assert "42326" not in by_id(ds) and ds.missing == [str((root / "42326.webm").absolute())]


def test_ssv2_missing_validation_json_error_names_expected_path(tmp_path):
    root, ann = make_ssv2(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"something-something-v2-validation\.json"):
        parse("ssv2", root, ann, "val")


# --------------------------------------------------------------------------- Something-Something V1

# The first lines of the official something-something-v1-labels.csv.
SSV1_LABELS = [
    "Holding something",
    "Turning something upside down",
    "Turning the camera left while filming something",
    "Stacking number of something",
    "Turning the camera right while filming something",
]


def make_ssv1(tmp_path: Path) -> tuple[Path, Path]:
    root, ann = tmp_path / "20bn-something-something-v1", tmp_path / "ssv1"
    write(ann / "something-something-v1-labels.csv", "\n".join(SSV1_LABELS) + "\n")
    write(
        ann / "something-something-v1-train.csv",
        "100218;Turning the camera left while filming something\n24;Holding something\n",
    )
    write(ann / "something-something-v1-validation.csv", "1;Stacking number of something\n")
    write(ann / "something-something-v1-test.csv", "7\n8\n")
    for vid in ("100218", "24", "1", "7", "8"):
        touch(root / vid / "00001.jpg")
    return root, ann


def test_ssv1_semicolon_csv_labels_index_by_label_file_line_order(tmp_path):
    root, ann = make_ssv1(tmp_path)
    ds = parse("ssv1", root, ann, "train")
    assert ds.classes == SSV1_LABELS
    assert [(r.video_id, r.label) for r in ds.records] == [("100218", 2), ("24", 0)]
    assert ds.records[0].path == str((root / "100218").absolute())
    assert [r.label for r in parse("ssv1", root, ann, "val").records] == [3]


def test_ssv1_test_csv_with_only_ids_gives_label_minus_one(tmp_path):
    root, ann = make_ssv1(tmp_path)
    assert [(r.video_id, r.label) for r in parse("ssv1", root, ann, "test").records] == [("7", -1), ("8", -1)]


def test_ssv1_frame_folder_must_exist_as_a_folder(tmp_path):
    root, ann = make_ssv1(tmp_path)
    (root / "24/00001.jpg").unlink()
    (root / "24").rmdir()
    touch(root / "24")  # a file where the frame folder should be
    ds = parse("ssv1", root, ann, "train")
    assert [r.video_id for r in ds.records] == ["100218"]
    assert ds.missing == [str((root / "24").absolute())]


def test_ssv1_unknown_label_text_names_file_and_line(tmp_path):
    root, ann = make_ssv1(tmp_path)
    write(ann / "something-something-v1-validation.csv", "1;Holding something\n2;Juggling something\n")
    with pytest.raises(ValueError, match=r"something-something-v1-validation\.csv:2:.*2;Juggling something"):
        parse("ssv1", root, ann, "val")


def test_ssv1_flip_pairs_from_official_label_names(tmp_path):
    root, ann = make_ssv1(tmp_path)
    assert parse("ssv1", root, ann, "train").flip_swap_pairs() == [(2, 4)]


# --------------------------------------------------------------------------- generic lists


def test_video_list_path_with_spaces_splits_on_last_whitespace(tmp_path):
    ann = write(tmp_path / "lists/train.txt", "my clips/a b.mp4 1\nother/c.mp4\t0\n")
    touch(tmp_path / "v/my clips/a b.mp4")
    touch(tmp_path / "v/other/c.mp4")
    ds = parse("video_list", tmp_path / "v", ann.parent, "train")
    assert [(r.video_id, r.label) for r in ds.records] == [("my clips/a b", 1), ("other/c", 0)]
    assert ds.records[0].path == str((tmp_path / "v/my clips/a b.mp4").absolute())


def test_video_list_class_names_from_classes_txt(tmp_path):
    write(tmp_path / "lists/classes.txt", "walk\nrun\njump\n")
    ann = write(tmp_path / "lists/train.txt", "x.mp4 2\n")
    touch(tmp_path / "v/x.mp4")
    ds = parse("video_list", tmp_path / "v", ann, "train")
    assert ds.classes == ["walk", "run", "jump"] and ds.records[0].label == 2


def test_video_list_without_classes_txt_names_classes_0_to_max_over_folder_lists(tmp_path):
    write(tmp_path / "lists/train.txt", "x.mp4 0\n")
    write(tmp_path / "lists/val.txt", "y.mp4 3\n")
    touch(tmp_path / "v/x.mp4")
    assert parse("video_list", tmp_path / "v", tmp_path / "lists", "train").classes == ["0", "1", "2", "3"]


def test_video_list_val_subset_reads_validation_txt(tmp_path):
    write(tmp_path / "lists/validation.txt", "y.mp4 0\n")
    touch(tmp_path / "v/y.mp4")
    assert [r.video_id for r in parse("video_list", tmp_path / "v", tmp_path / "lists", "val").records] == [
        "y"
    ]


def test_video_list_malformed_line_error_names_file_line_and_text(tmp_path):
    ann = write(tmp_path / "lists/train.txt", "a.mp4 0\n\nb.mp4 zero\n")
    (tmp_path / "v").mkdir()
    with pytest.raises(ValueError, match=r"train\.txt:3: .*'b\.mp4 zero'"):
        parse("video_list", tmp_path / "v", ann, "train")


def test_frame_list_records_num_frames_and_folder(tmp_path):
    ann = write(tmp_path / "train_videofolder.txt", "frames/clip one 48 2\nframes/two 30 0\n")
    (tmp_path / "v/frames/clip one").mkdir(parents=True)
    touch(tmp_path / "v/frames/two")  # a file, not a frame folder: missing
    ds = parse("frame_list", tmp_path / "v", ann, "train")
    assert ds.records == [
        VideoRecord(str((tmp_path / "v/frames/clip one").absolute()), 2, "frames/clip one", 48)
    ]
    assert ds.missing == [str((tmp_path / "v/frames/two").absolute())]
    assert ds.classes == ["0", "1", "2"]


def test_frame_list_missing_num_frames_is_a_malformed_line(tmp_path):
    ann = write(tmp_path / "train.txt", "frames/a 3\n")
    (tmp_path / "v").mkdir()
    with pytest.raises(ValueError, match=r"train\.txt:1: "):
        parse("frame_list", tmp_path / "v", ann, "train")


# --------------------------------------------------------------------------- flip_swap_pairs


def test_flip_swap_pairs_on_official_ssv2_labels_are_the_three_direction_pairs():
    assert flip_swap_pairs(SSV2_LABELS) == [(86, 87), (93, 94), (166, 167)]


def test_flip_swap_pairs_match_whole_words_only():
    classes = [
        "Putting something upright on the table",  # "upright" is not "right"
        "Putting something upleft on the table",
        "Plugging something into something but pulling it right out as you remove your hand",
        "Moving something up",
        "Moving something down",
    ]
    assert flip_swap_pairs(classes) == []


def test_flip_swap_pairs_ignore_case():
    assert flip_swap_pairs(["Swipe Left", "wave", "swipe right"]) == [(0, 2)]


def test_flip_swap_pairs_method_uses_dataset_classes(tmp_path):
    ds = ParsedDataset(
        [],
        [
            "Turning the camera right while filming something",
            "x",
            "Turning the camera left while filming something",
        ],
        [],
        "ssv2",
        "train",
    )
    assert ds.flip_swap_pairs() == [(0, 2)]


# --------------------------------------------------------------------------- dispatch


def test_unknown_format_error_lists_valid_formats(tmp_path):
    with pytest.raises(ValueError) as err:
        parse("hmdb51", tmp_path, tmp_path, "train")
    for name in ("ucf101", "kinetics", "ssv2", "ssv1", "video_list", "frame_list"):
        assert name in str(err.value)
    assert set(FORMATS) == {"ucf101", "kinetics", "ssv2", "ssv1", "video_list", "frame_list"}


def test_unknown_subset_is_rejected(tmp_path):
    root, ann = make_ucf(tmp_path)
    with pytest.raises(ValueError, match="subset"):
        parse("ucf101", root, ann, "holdout")


def test_missing_annotation_folder_error_names_expected_path(tmp_path):
    (tmp_path / "v").mkdir()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        parse("ssv2", tmp_path / "v", tmp_path / "nowhere", "train")


# The official something-something-v2-labels.json, in index order (174 classes).
SSV2_LABELS = [
    "Approaching something with your camera",
    "Attaching something to something",
    "Bending something so that it deforms",
    "Bending something until it breaks",
    "Burying something in something",
    "Closing something",
    "Covering something with something",
    "Digging something out of something",
    "Dropping something behind something",
    "Dropping something in front of something",
    "Dropping something into something",
    "Dropping something next to something",
    "Dropping something onto something",
    "Failing to put something into something because something does not fit",
    "Folding something",
    "Hitting something with something",
    "Holding something",
    "Holding something behind something",
    "Holding something in front of something",
    "Holding something next to something",
    "Holding something over something",
    "Laying something on the table on its side, not upright",
    "Letting something roll along a flat surface",
    "Letting something roll down a slanted surface",
    "Letting something roll up a slanted surface, so it rolls back down",
    "Lifting a surface with something on it but not enough for it to slide down",
    "Lifting a surface with something on it until it starts sliding down",
    "Lifting something up completely without letting it drop down",
    "Lifting something up completely, then letting it drop down",
    "Lifting something with something on it",
    "Lifting up one end of something without letting it drop down",
    "Lifting up one end of something, then letting it drop down",
    "Moving away from something with your camera",
    "Moving part of something",
    "Moving something across a surface until it falls down",
    "Moving something across a surface without it falling down",
    "Moving something and something away from each other",
    "Moving something and something closer to each other",
    "Moving something and something so they collide with each other",
    "Moving something and something so they pass each other",
    "Moving something away from something",
    "Moving something away from the camera",
    "Moving something closer to something",
    "Moving something down",
    "Moving something towards the camera",
    "Moving something up",
    "Opening something",
    "Picking something up",
    "Piling something up",
    "Plugging something into something",
    "Plugging something into something but pulling it right out as you remove your hand",
    "Poking a hole into some substance",
    "Poking a hole into something soft",
    "Poking a stack of something so the stack collapses",
    "Poking a stack of something without the stack collapsing",
    "Poking something so it slightly moves",
    "Poking something so lightly that it doesn't or almost doesn't move",
    "Poking something so that it falls over",
    "Poking something so that it spins around",
    "Pouring something into something",
    "Pouring something into something until it overflows",
    "Pouring something onto something",
    "Pouring something out of something",
    "Pretending or failing to wipe something off of something",
    "Pretending or trying and failing to twist something",
    "Pretending to be tearing something that is not tearable",
    "Pretending to close something without actually closing it",
    "Pretending to open something without actually opening it",
    "Pretending to pick something up",
    "Pretending to poke something",
    "Pretending to pour something out of something, but something is empty",
    "Pretending to put something behind something",
    "Pretending to put something into something",
    "Pretending to put something next to something",
    "Pretending to put something on a surface",
    "Pretending to put something onto something",
    "Pretending to put something underneath something",
    "Pretending to scoop something up with something",
    "Pretending to spread air onto something",
    "Pretending to sprinkle air onto something",
    "Pretending to squeeze something",
    "Pretending to take something from somewhere",
    "Pretending to take something out of something",
    "Pretending to throw something",
    "Pretending to turn something upside down",
    "Pulling something from behind of something",
    "Pulling something from left to right",
    "Pulling something from right to left",
    "Pulling something onto something",
    "Pulling something out of something",
    "Pulling two ends of something but nothing happens",
    "Pulling two ends of something so that it gets stretched",
    "Pulling two ends of something so that it separates into two pieces",
    "Pushing something from left to right",
    "Pushing something from right to left",
    "Pushing something off of something",
    "Pushing something onto something",
    "Pushing something so it spins",
    "Pushing something so that it almost falls off but doesn't",
    "Pushing something so that it falls off the table",
    "Pushing something so that it slightly moves",
    "Pushing something with something",
    "Putting number of something onto something",
    "Putting something and something on the table",
    "Putting something behind something",
    "Putting something in front of something",
    "Putting something into something",
    "Putting something next to something",
    "Putting something on a flat surface without letting it roll",
    "Putting something on a surface",
    "Putting something on the edge of something so it is not supported and falls down",
    "Putting something onto a slanted surface but it doesn't glide down",
    "Putting something onto something",
    "Putting something onto something else that cannot support it so it falls down",
    "Putting something similar to other things that are already on the table",
    "Putting something that can't roll onto a slanted surface, so it slides down",
    "Putting something that can't roll onto a slanted surface, so it stays where it is",
    "Putting something that cannot actually stand upright upright on the table, so it falls on its side",
    "Putting something underneath something",
    "Putting something upright on the table",
    "Putting something, something and something on the table",
    "Removing something, revealing something behind",
    "Rolling something on a flat surface",
    "Scooping something up with something",
    "Showing a photo of something to the camera",
    "Showing something behind something",
    "Showing something next to something",
    "Showing something on top of something",
    "Showing something to the camera",
    "Showing that something is empty",
    "Showing that something is inside something",
    "Something being deflected from something",
    "Something colliding with something and both are being deflected",
    "Something colliding with something and both come to a halt",
    "Something falling like a feather or paper",
    "Something falling like a rock",
    "Spilling something behind something",
    "Spilling something next to something",
    "Spilling something onto something",
    "Spinning something so it continues spinning",
    "Spinning something that quickly stops spinning",
    "Spreading something onto something",
    "Sprinkling something onto something",
    "Squeezing something",
    "Stacking number of something",
    "Stuffing something into something",
    "Taking one of many similar things on the table",
    "Taking something from somewhere",
    "Taking something out of something",
    "Tearing something into two pieces",
    "Tearing something just a little bit",
    "Throwing something",
    "Throwing something against something",
    "Throwing something in the air and catching it",
    "Throwing something in the air and letting it fall",
    "Throwing something onto a surface",
    "Tilting something with something on it slightly so it doesn't fall down",
    "Tilting something with something on it until it falls off",
    "Tipping something over",
    "Tipping something with something in it over, so something in it falls out",
    "Touching (without moving) part of something",
    "Trying but failing to attach something to something because it doesn't stick",
    "Trying to bend something unbendable so nothing happens",
    "Trying to pour something into something, but missing so it spills next to it",
    "Turning something upside down",
    "Turning the camera downwards while filming something",
    "Turning the camera left while filming something",
    "Turning the camera right while filming something",
    "Turning the camera upwards while filming something",
    "Twisting (wringing) something wet until water comes out",
    "Twisting something",
    "Uncovering something",
    "Unfolding something",
    "Wiping something off of something",
]

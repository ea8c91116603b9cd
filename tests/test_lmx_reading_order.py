"""reading_order: the labels of the encoder's CTC loss follow the page, not LMX's voice-by-voice order."""

from acai_omr.lmx.reading_order import reading_order


def test_two_voices_are_interleaved_by_onset_and_staff():
    # LMX: the treble's two quarters, back to the barline, then the bass's half note
    lmx = ("measure key:fifths:0 time beats:2 beat-type:4 clef:G2 staff:1 clef:F4 staff:2 "
           "C5 voice:1 quarter staff:1 D5 quarter backup half C3 voice:5 half staff:2")
    assert reading_order(lmx) == ["C5", "C3", "D5"]


def test_chords_read_top_down_and_measures_stay_in_order():
    lmx = ("measure clef:G2 staff:1 C4 voice:1 half staff:1 chord G4 half chord E4 half "
           "measure A4 voice:1 quarter staff:1 rest quarter")
    assert reading_order(lmx) == ["G4", "E4", "C4", "A4", "rest"]


def test_invisible_rests_are_skipped_but_keep_time():
    # the hidden quarter rest pushes the E5 to the second beat, after the bass's first-beat note
    lmx = ("measure clef:G2 staff:1 clef:F4 staff:2 print-object:no rest voice:1 quarter staff:1 E5 quarter "
           "backup half G2 voice:5 quarter staff:2 A2 quarter")
    assert reading_order(lmx) == ["G2", "E5", "A2"]


def test_unparseable_sequences_give_no_labels():
    assert reading_order("quarter C4") == []
    assert reading_order("") == []

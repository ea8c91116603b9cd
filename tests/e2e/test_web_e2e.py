"""The whole user flow in a real headless Chromium against a real server.

Detected path: upload an engraved page -> accept the detected boxes -> transcribe
-> see the rendering -> download the MusicXML and parse it. Manual path: no
systems found -> draw, move, resize, nudge, delete and reorder boxes with mouse
and keyboard -> Enter transcribes. Plus a refused upload and a phone-sized
screen. Each step leaves a screenshot (see conftest.py).
"""

from __future__ import annotations

from acai_omr.lmx.musicxml import parse_score_string


def box_states(page):
    """The boxes of the shown page as the page's own state holds them (page pixels)."""
    return page.evaluate(
        "() => { const s = window.acaiOmr.state; return s.pages[s.page].boxes.map(b => [b.x0, b.y0, b.x1, b.y1]); }")


def selected_id(page):
    return page.evaluate("() => window.acaiOmr.state.selected")


def wait_for_result(page):
    page.wait_for_selector("#step-result:not([hidden])", timeout=90_000)


def test_detected_boxes_to_downloaded_musicxml(page, server_url, rendered_page, shoot):
    path, true_boxes = rendered_page
    page.goto(server_url)
    page.wait_for_load_state("networkidle")
    assert page.locator("#banner").is_hidden()  # the weights loaded
    shoot(page, "01-upload")

    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("#step-systems:not([hidden])")
    page.wait_for_selector("#overlay .box")
    detected = page.locator("#overlay .box").count()
    assert detected >= 1
    assert page.locator("#box-list li").count() == detected
    assert "system(s) found" in page.inner_text("#upload-status")
    page.locator("#step-systems").scroll_into_view_if_needed()
    shoot(page, "02-detected-systems")

    page.click("#btn-transcribe")
    page.wait_for_selector("#step-progress:not([hidden])")
    page.wait_for_selector("#progress-list li")
    shoot(page.locator("#step-progress"), "03-progress")
    wait_for_result(page)
    assert page.locator("#progress-list li").count() == detected
    page.wait_for_selector("#score-pages img")
    page.wait_for_function("() => [...document.querySelectorAll('#score-pages img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("#systems-body tr").count() == detected
    from acai_omr.inference.confidence import CONFIDENCE_WORDS

    confidences = page.locator("#systems-body .conf").all_inner_texts()
    assert confidences and all(text in [words for _, words in CONFIDENCE_WORDS] for text in confidences)
    note = page.inner_text("#accuracy-note")  # the model's measured accuracy, said plainly
    assert "differ from the printed score by 58%" in note and "check every note" in note
    assert page.locator("#render-error").is_hidden()
    shoot(page.locator("#step-result"), "04-result")

    # listen before downloading: the rendered MIDI, played in the page
    page.click("#btn-play")
    page.wait_for_function("() => document.querySelector('#player-status').textContent.startsWith('Playing')")
    assert page.evaluate("() => window.acaiOmr.player.notes") > 0
    page.click("#btn-play")  # stop
    assert page.inner_text("#btn-play").endswith("Listen")
    full_size = page.get_attribute("#score-pages a", "href")  # each rendered page opens at full size
    assert page.request.get(server_url + full_size).headers["content-type"] == "image/png"

    with page.expect_download() as download_info:
        page.click("#dl-musicxml")
    download = download_info.value
    assert download.suggested_filename == "page.musicxml"  # named after the uploaded page.png
    root = parse_score_string(open(download.path(), "rb").read())
    assert root.tag == "score-partwise" and root.findtext("work/work-title") == "page"
    measures = root.findall("part/measure")
    assert measures
    system_starts = sum(m.find("print[@new-system='yes']") is not None for m in measures)
    assert system_starts == detected - 1

    with page.expect_download() as midi_info:
        page.click("#dl-mid")
    assert open(midi_info.value.path(), "rb").read(4) == b"MThd"


def test_manual_boxes_drawn_edited_and_transcribed_with_the_keyboard(page, server_url, rendered_page, shoot):
    path, true_boxes = rendered_page
    page.goto(server_url)
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("#overlay .box")
    page.click("#btn-clear")  # start from nothing, as when no system is found
    assert page.locator("#overlay .box").count() == 0
    assert page.locator("#btn-transcribe").is_disabled()

    overlay = page.locator("#overlay").bounding_box()
    width = page.evaluate("() => window.acaiOmr.state.pages[0].width")
    scale = overlay["width"] / width

    def to_screen(x, y):
        return overlay["x"] + x * scale, overlay["y"] + y * scale

    # draw a box around the first true system: n, then drag
    x0, y0, x1, y1 = true_boxes[0]
    page.keyboard.press("n")
    assert "drawing" in page.get_attribute("#overlay", "class")
    page.mouse.move(*to_screen(x0 + 30, y0 + 20))
    page.mouse.down()
    page.mouse.move(*to_screen((x0 + x1) / 2, (y0 + y1) / 2), steps=4)
    page.mouse.move(*to_screen(x1 - 30, y1 - 20), steps=4)
    page.mouse.up()
    drawn = box_states(page)
    assert len(drawn) == 1
    assert abs(drawn[0][0] - (x0 + 30)) < 3 / scale and abs(drawn[0][3] - (y1 - 20)) < 3 / scale

    # resize from the bottom-right handle, then move by dragging the middle
    handle = page.locator("#overlay .box.selected .handle.se").bounding_box()
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(*to_screen(x1, y1), steps=4)
    page.mouse.up()
    resized = box_states(page)[0]
    assert abs(resized[2] - x1) < 3 / scale and abs(resized[3] - y1) < 3 / scale
    page.mouse.move(*to_screen((x0 + x1) / 2, (y0 + y1) / 2))
    page.mouse.down()
    page.mouse.move(*to_screen((x0 + x1) / 2 - 30, (y0 + y1) / 2 - 20), steps=4)
    page.mouse.up()
    moved = box_states(page)[0]
    assert moved[0] < resized[0] and moved[1] < resized[1]
    assert abs((moved[2] - moved[0]) - (resized[2] - resized[0])) < 0.01  # moving keeps the size

    # keyboard: arrows nudge, Shift+arrows nudge further, Alt+arrows resize
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("Shift+ArrowDown")
    page.keyboard.press("Shift+ArrowDown")
    nudged = box_states(page)[0]
    assert abs((nudged[0] - moved[0]) * scale - 21) < 0.5 and abs((nudged[1] - moved[1]) * scale - 20) < 0.5
    page.keyboard.press("Alt+ArrowLeft")
    assert box_states(page)[0][2] < nudged[2]

    # a second box (tap in draw mode gives a page-wide box), then reorder and delete
    sx0, sy0, sx1, sy1 = true_boxes[1]
    page.click("#btn-new")
    page.mouse.click(*to_screen((sx0 + sx1) / 2, (sy0 + sy1) / 2))
    boxes = box_states(page)
    assert len(boxes) == 2 and boxes[1][1] > boxes[0][1]  # sorted top to bottom
    second = selected_id(page)
    page.keyboard.press("[")  # move it earlier
    assert page.evaluate("() => window.acaiOmr.state.pages[0].boxes[0].id") == second
    assert page.inner_text("#overlay .box.selected .label") == "1"
    page.keyboard.press("]")
    ids = page.evaluate("() => window.acaiOmr.state.pages[0].boxes.map(b => b.id)")
    assert selected_id(page) == ids[1]
    page.keyboard.press("Shift+Tab")  # Tab walks through the boxes
    assert selected_id(page) == ids[0]
    page.keyboard.press("Tab")
    assert selected_id(page) == ids[1]
    page.keyboard.press("n")
    page.mouse.click(*to_screen(width / 2, 40))
    assert len(box_states(page)) == 3
    page.keyboard.press("Delete")
    assert len(box_states(page)) == 2
    page.locator("#step-systems").scroll_into_view_if_needed()
    shoot(page, "05-manual-boxes")

    page.keyboard.press("Enter")
    wait_for_result(page)
    assert page.locator("#systems-body tr").count() == 2
    crops = page.locator("#systems-body td.img img[alt^='Input crop']")
    assert crops.count() == 2
    link = page.get_attribute("#dl-musicxml", "href")
    response = page.request.get(server_url + link)
    assert response.ok
    assert len(parse_score_string(response.body()).findall("part/measure")) >= 2


def test_refused_upload_shows_a_clear_message(page, server_url, tmp_path, shoot):
    fake = tmp_path / "notes.png"
    fake.write_text("these are not the notes you are looking for")
    page.goto(server_url)
    page.set_input_files("#file-input", str(fake))
    page.wait_for_selector("#error:not([hidden])")
    message = page.inner_text("#error-text")
    assert "notes.png" in message and "PNG, JPEG" in message
    assert page.locator("#step-systems").is_hidden()
    shoot(page, "06-error-unsupported-file")

    # dropping a good file on the drop zone clears the error and goes on
    transfer = page.evaluate_handle("""() => {
        const canvas = document.createElement('canvas'); canvas.width = 600; canvas.height = 400;
        const ctx = canvas.getContext('2d'); ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, 600, 400);
        const bytes = atob(canvas.toDataURL('image/png').split(',')[1]);
        const file = new File([Uint8Array.from(bytes, c => c.charCodeAt(0))], 'dropped.png', {type: 'image/png'});
        const dt = new DataTransfer(); dt.items.add(file); return dt; }""")
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#step-systems:not([hidden])")
    assert page.locator("#error").is_hidden()
    assert "dropped.png" in page.inner_text("#upload-status")


def test_a_refused_file_leaves_the_edited_page_and_its_boxes_as_they_were(page, server_url, rendered_page,
                                                                          tmp_path, shoot):
    path, _ = rendered_page
    page.goto(server_url)
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("#overlay .box")
    page.locator("#overlay .box").first.click()
    page.keyboard.press("Shift+ArrowDown")  # the user edits a box...
    page.keyboard.press("Tab")
    page.keyboard.press("Delete")  # ...and deletes another
    edited = box_states(page)
    fake = tmp_path / "IMG_0001.jpg"
    fake.write_bytes(b"\xff\xd8\xff\xe0 not really a photo")
    page.set_input_files("#file-input", str(fake))  # then picks the wrong file
    page.wait_for_selector("#error:not([hidden])")
    assert "IMG_0001.jpg" in page.inner_text("#error-text")
    assert page.locator("#step-systems").is_visible()
    assert box_states(page) == edited
    assert page.locator("#overlay .box").count() == len(edited)
    assert "unchanged" in page.inner_text("#upload-status")
    shoot(page, "07-refused-file-keeps-the-page")


def test_cancelling_mid_run_keeps_the_finished_systems_for_download(chromium, tmp_path_factory, e2e_weights,
                                                                    rendered_page):
    """A long job (the detected boxes repeated to 60, decoded one at a time) cancelled from the page: the
    systems finished so far are joined and offered for download, with the file's name."""
    from conftest import serving

    path, _ = rendered_page
    with serving(tmp_path_factory.mktemp("e2e-cancel"), e2e_weights, decode={"max_tokens": 40, "batch_size": 1}) as url:
        page = chromium.new_page()
        try:
            page.goto(url)
            page.set_input_files("#file-input", str(path))
            page.wait_for_selector("#overlay .box")
            page.evaluate("""() => { const s = window.acaiOmr.state; const p = s.pages[0];
                const copies = []; while (copies.length < 60) p.boxes.forEach(b => copies.push({...b, id: s.nextId++}));
                p.boxes = copies.slice(0, 60); }""")  # the most a job may have
            page.click("#btn-transcribe")
            page.wait_for_function("() => [...document.querySelectorAll('#progress-list .state')]"
                                   ".some(b => b.textContent === 'done')", timeout=60_000)
            page.click("#btn-cancel")
            page.wait_for_selector("#step-result:not([hidden])", timeout=30_000)
            assert "can be downloaded" in page.inner_text("#job-message")
            with page.expect_download() as info:
                page.click("#dl-musicxml")
            assert info.value.suggested_filename == "page.musicxml"
            measures = parse_score_string(open(info.value.path(), "rb").read()).findall("part/measure")
            assert measures
        finally:
            page.close()


def test_a_phone_photo_saved_as_mpo_is_one_page(page, server_url, tmp_path):
    from PIL import Image

    photo = tmp_path / "IMG_0002.jpg"  # as an iPhone saves it: the photo, then a second (depth) picture
    Image.new("RGB", (1200, 1600), (250, 250, 245)).save(photo, "MPO", save_all=True,
                                                         append_images=[Image.new("RGB", (160, 120))])
    page.goto(server_url)
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector("#step-systems:not([hidden])")
    assert "IMG_0002.jpg: 1 page(s)" in page.inner_text("#upload-status")
    assert page.locator("#page-tabs").is_hidden()  # one page: no tabs


def test_the_sample_page_finds_its_four_systems(page, server_url):
    page.goto(server_url)
    page.click("#btn-sample")
    page.wait_for_selector("#overlay .box")
    assert page.locator("#overlay .box").count() == 4
    assert "Im wunderschönen Monat Mai.png: 1 page(s), 4 system(s) found" in page.inner_text("#upload-status")


def test_blank_page_offers_manual_boxes_on_a_phone_screen(chromium, server_url, tmp_path, shoot):
    from PIL import Image

    blank = tmp_path / "blank.jpg"
    Image.new("RGB", (1200, 1600), (250, 250, 245)).save(blank)
    context = chromium.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                   has_touch=True)
    phone = context.new_page()
    try:
        phone.goto(server_url)
        assert phone.get_attribute("#camera-input", "capture") == "environment"
        shoot(phone, "07-phone-upload")
        phone.set_input_files("#camera-input", str(blank))
        phone.wait_for_selector("#step-systems:not([hidden])")
        assert "No systems were found" in phone.inner_text("#systems-notice")
        assert phone.locator("#overlay .box").count() == 0
        phone.tap("#btn-new")
        # the overlay takes the page image's size once it is decoded: on a loaded machine that comes after
        # the notice, and a tap aimed at the overlay's box before it lands beside the page
        phone.wait_for_function("() => { const img = document.getElementById('page-image');"
                                " return img.complete && img.naturalWidth > 0"
                                " && document.getElementById('overlay').getBoundingClientRect().height > 100; }")
        box = phone.locator("#overlay").bounding_box()
        phone.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 3)
        phone.wait_for_selector("#overlay .box", timeout=10_000)  # the box is drawn after the tap's events run
        assert phone.locator("#overlay .box").count() == 1
        shoot(phone, "08-phone-no-systems-manual-box")
        assert phone.locator(".shortcuts").is_hidden()  # keyboard help takes no room on a touch screen
        label = phone.locator("#overlay .box .label").bounding_box()
        drawn = phone.locator("#overlay .box").bounding_box()
        assert label["y"] + label["height"] <= drawn["y"] + 1  # the number sits above the box, off the music
        # a finger drags the box down: real touch events, as a phone sends them
        before = box_states(phone)[0]
        cdp = context.new_cdp_session(phone)
        x, y = drawn["x"] + drawn["width"] / 2, drawn["y"] + drawn["height"] / 2
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
        for step in range(1, 6):
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y + 12 * step}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        after = box_states(phone)[0]
        assert after[1] > before[1] + 20 and abs((after[3] - after[1]) - (before[3] - before[1])) < 1
    finally:
        context.close()


def test_missing_weights_are_announced_and_transcribing_says_why(page, server_without_weights_url, rendered_page,
                                                                 shoot):
    path, _ = rendered_page
    page.goto(server_without_weights_url)
    page.wait_for_selector("#banner:not([hidden])")
    assert "weights" in page.inner_text("#banner").lower()
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("#overlay .box")  # detection and box editing work without the model
    page.click("#btn-transcribe")
    page.wait_for_selector("#error:not([hidden])")
    assert "weights" in page.inner_text("#error-text").lower()
    assert page.locator("#step-progress").is_hidden()
    shoot(page, "09-weights-missing")

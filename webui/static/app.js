// vidsearch pages: small progressive enhancements; every page also works without this script.
(function () {
  "use strict";

  // Watch page: start the player at the clip's start (the #t= media fragment does the same where supported).
  var player = document.getElementById("player");
  if (player) {
    var start = parseFloat(player.dataset.start || "0");
    var seekToStart = function () {
      if (player.currentTime < start) { player.currentTime = start; }
    };
    if (player.readyState >= 1) { seekToStart(); }
    player.addEventListener("loadedmetadata", seekToStart);
    var replay = document.getElementById("replay");
    if (replay) {
      replay.addEventListener("click", function () {
        player.currentTime = start;
        player.play();
      });
    }
    // The caption list: each timed caption's button plays the video from that caption.
    document.querySelectorAll(".cues button.seek").forEach(function (button) {
      button.addEventListener("click", function () {
        player.currentTime = parseFloat(button.dataset.start || "0");
        player.play();
      });
    });
  }

  // Search page: changing a toggle re-runs the current text query; a dropped file is searched right away.
  var textForm = document.querySelector("form.text-search");
  if (textForm) {
    textForm.querySelectorAll("select, input[type=checkbox]").forEach(function (el) {
      el.addEventListener("change", function () {
        if (textForm.q.value.trim()) { textForm.submit(); }
      });
    });
  }
  var drop = document.getElementById("drop");
  if (drop) {
    var input = drop.querySelector("input[type=file]");
    var form = drop.closest("form");
    ["dragenter", "dragover"].forEach(function (name) {
      drop.addEventListener(name, function (e) { e.preventDefault(); drop.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      drop.addEventListener(name, function () { drop.classList.remove("over"); });
    });
    drop.addEventListener("drop", function (e) {
      e.preventDefault();
      if (e.dataTransfer && e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        form.submit();
      }
    });
    input.addEventListener("change", function () { if (input.files.length) { form.submit(); } });
  }
})();

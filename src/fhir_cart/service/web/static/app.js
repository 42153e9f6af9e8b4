// The workbench's own script (no inline scripts: the pages' Content-Security-Policy is 'self').
(function () {
  "use strict";
  // A job page follows its job live (server-sent events) and reloads when it ends.
  var job = document.getElementById("job");
  if (job && job.dataset.finished === "no" && window.EventSource) {
    var source = new EventSource("/ui/jobs/" + job.dataset.job + "/events");
    var status = document.getElementById("job-status");
    var bar = document.getElementById("job-progress");
    var text = document.getElementById("job-progress-text");
    source.addEventListener("progress", function (event) {
      var state = JSON.parse(event.data);
      status.textContent = state.status;
      bar.max = state.total || 1;
      bar.value = state.done;
      text.textContent = state.done + " of " + state.total;
    });
    source.addEventListener("end", function () {
      source.close();
      window.location.reload();
    });
  }
  // The upload form's drop zone: a file dropped on it goes into the file input.
  var drop = document.getElementById("drop");
  var input = document.getElementById("file");
  if (drop && input) {
    ["dragenter", "dragover"].forEach(function (name) {
      drop.addEventListener(name, function (event) { event.preventDefault(); drop.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      drop.addEventListener(name, function () { drop.classList.remove("over"); });
    });
    drop.addEventListener("drop", function (event) {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) { input.files = event.dataTransfer.files; }
    });
  }
})();

// Berth's UI works without this file; it only adds niceties:
// a Copy button next to pull commands, and a box that selects every tag of a table.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input.copy").forEach(function (input) {
    var button = document.createElement("button");
    button.type = "button";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy the command");
    button.addEventListener("click", function () {
      input.select();
      var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(done, function () { document.execCommand("copy"); done(); });
      } else {
        document.execCommand("copy");
        done();
      }
    });
    input.insertAdjacentElement("afterend", button);
  });
  document.querySelectorAll("table[data-select]").forEach(function (table) {
    var head = table.querySelector("thead th");
    if (!head) { return; }
    var all = document.createElement("input");
    all.type = "checkbox";
    all.setAttribute("aria-label", "Select every tag");
    var boxes = table.querySelectorAll("tbody input[type=checkbox]");
    all.addEventListener("change", function () { boxes.forEach(function (b) { b.checked = all.checked; }); });
    head.appendChild(all);
  });
});

// goflow web UI: the little script the pages use. Every page reads without it; it adds
// confirmations, in-place refresh of work in progress, the live log, and pan, zoom and search
// on graphs. Written by the goflow team, served from the binary, no dependencies.
(function () {
  "use strict";

  // --- Confirmations: a form with data-confirm asks first, then posts confirmed=1 (without
  // the script, the server answers such a post with a confirmation page instead).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (!question || form.querySelector("input[name=confirmed]")) return;
    if (!window.confirm(question)) {
      event.preventDefault();
      return;
    }
    var confirmed = document.createElement("input");
    confirmed.type = "hidden";
    confirmed.name = "confirmed";
    confirmed.value = "1";
    form.appendChild(confirmed);
  });

  // --- Refresh in place: while the page shows work in progress (#autorefresh), swap each region
  // (an element with data-region and an id) for its fresh copy. The log is not a region, so it
  // keeps growing undisturbed. When: as the coordinator reports a change (server-sent events
  // from the marker's data-watch, fed by its change stream); on the marker's timer when
  // EventSource is missing or the stream broke (it is opened again later), and ten times
  // slower while the stream works, so durations still move. While the page follows a running
  // try's log, that stream stands in (its end refreshes the page) and the watch waits: a
  // browser keeps only six connections to a host, so a tab holds one stream at a time.
  // <html data-live> says which: "connecting", "stream", "log", "timer" or "off" (the page
  // no longer in progress).
  function refreshRegions(then) {
    fetch(location.href, { cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error(response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-region][id]").forEach(function (old) {
          var replacement = fresh.getElementById(old.id);
          if (replacement) old.replaceWith(document.importNode(replacement, true));
        });
        if (then) then(!!fresh.getElementById("autorefresh"));
      })
      .catch(function () {
        if (then) then(true);
      });
  }
  var SLOWER_WHILE_STREAMING = 10;
  var log = document.getElementById("log");
  var logFollowing = !!(log && log.getAttribute("data-live-url"));
  var refreshTimer = null;
  var refreshing = false;
  var refreshAgain = false;
  var missedWhileHidden = false;
  var watch = null;
  var watchWorks = false;
  var watchRetry = null;
  var watchBackoff = 0;
  function setLive(mode) {
    document.documentElement.setAttribute("data-live", mode);
  }
  function refreshEvery() {
    var marker = document.getElementById("autorefresh");
    var seconds = (marker && parseInt(marker.getAttribute("data-seconds"), 10)) || 3;
    return seconds * 1000;
  }
  function scheduleRefresh() {
    if (refreshTimer) clearTimeout(refreshTimer);
    refreshTimer = null;
    if (!document.getElementById("autorefresh")) return;
    var every = refreshEvery() * (watchWorks ? SLOWER_WHILE_STREAMING : 1);
    refreshTimer = setTimeout(function () {
      refreshTimer = null;
      refreshNow();
    }, every);
  }
  // One fetch at a time: changes arriving meanwhile make one more fetch after it.
  function refreshNow() {
    if (document.hidden) {
      missedWhileHidden = true;
      return;
    }
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    refreshRegions(function (more) {
      refreshing = false;
      if (!more) {
        stopLive();
        return;
      }
      if (!watch && !watchRetry && !logFollowing) openWatch();
      if (refreshAgain) {
        refreshAgain = false;
        refreshNow();
      } else {
        scheduleRefresh();
      }
    });
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && missedWhileHidden) {
      missedWhileHidden = false;
      refreshNow();
    }
  });
  function openWatch() {
    var marker = document.getElementById("autorefresh");
    var url = marker && marker.getAttribute("data-watch");
    if (!url || !window.EventSource || watch) return;
    watch = new EventSource(url);
    setLive("connecting");
    var works = function () {
      watchBackoff = 0;
      if (watchWorks) return;
      watchWorks = true;
      setLive("stream");
      scheduleRefresh(); // now the slow pace
    };
    watch.addEventListener("ready", works);
    watch.addEventListener("change", function () {
      works();
      refreshNow();
    });
    watch.onerror = function () {
      // Broken, refused or ended (the coordinator stepped down): the timer, and later again.
      watch.close();
      watch = null;
      watchWorks = false;
      setLive("timer");
      scheduleRefresh();
      watchBackoff = Math.min(watchBackoff ? watchBackoff * 2 : refreshEvery() * 2, 60000);
      watchRetry = setTimeout(function () {
        watchRetry = null;
        if (document.getElementById("autorefresh")) openWatch();
      }, watchBackoff);
    };
  }
  function stopLive() {
    if (watch) watch.close();
    watch = null;
    watchWorks = false;
    if (watchRetry) clearTimeout(watchRetry);
    if (refreshTimer) clearTimeout(refreshTimer);
    watchRetry = refreshTimer = null;
    setLive("off");
  }
  if (document.getElementById("autorefresh")) {
    // The timer runs at its full pace until the stream says it works.
    setLive(logFollowing ? "log" : window.EventSource ? "connecting" : "timer");
    scheduleRefresh();
    if (!logFollowing) openWatch();
  }

  // --- Live log: the server rendered the log up to an offset; follow it from there.
  if (logFollowing) {
    var url = log.getAttribute("data-live-url");
    var offset = parseInt(new URL(url, location.href).searchParams.get("offset"), 10) || 0;
    var follow = function () {
      var live = new URL(url, location.href);
      live.searchParams.set("offset", String(offset));
      var source = new EventSource(live.toString());
      source.addEventListener("chunk", function (event) {
        var chunk = JSON.parse(event.data);
        var atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
        log.appendChild(document.createTextNode(chunk.text));
        offset = chunk.offset;
        log.setAttribute("data-offset", String(offset));
        if (atBottom) window.scrollTo(0, document.body.scrollHeight);
        applyLogSearch();
      });
      source.addEventListener("eof", function () {
        source.close();
        logFollowing = false;
        var badge = document.getElementById("log-live");
        if (badge) badge.remove();
        // The try ended: show its final state now (and watch for changes if it goes on).
        refreshNow();
      });
      source.addEventListener("failure", function () {
        source.close();
        logFollowing = false;
      });
      source.onerror = function () {
        // Reconnect from where we are, not from the offset in the URL.
        source.close();
        setTimeout(follow, 2000);
      };
    };
    follow();
  }

  // --- Log search: show only the matching lines, with the count.
  var logSearch = document.getElementById("log-search");
  function applyLogSearch() {
    if (!logSearch || !log) return;
    var query = logSearch.value.toLowerCase();
    var filtered = document.getElementById("log-filtered");
    var count = document.getElementById("log-matches");
    if (!query) {
      if (filtered) filtered.remove();
      log.hidden = false;
      if (count) count.textContent = "";
      return;
    }
    if (!filtered) {
      filtered = document.createElement("pre");
      filtered.id = "log-filtered";
      filtered.className = "log";
      log.parentNode.insertBefore(filtered, log);
    }
    var lines = log.textContent.split("\n").filter(function (line) {
      return line.toLowerCase().indexOf(query) >= 0;
    });
    filtered.textContent = lines.join("\n");
    log.hidden = true;
    if (count) count.textContent = lines.length + " / " + log.textContent.split("\n").length;
  }
  if (logSearch) logSearch.addEventListener("input", applyLogSearch);

  // --- Graphs: pan by dragging, zoom with the wheel, search by name.
  document.querySelectorAll("[data-pan-zoom]").forEach(function (frame) {
    var svg = frame.querySelector("svg");
    if (!svg) return;
    var full = svg.viewBox.baseVal;
    var whole = { x: full.x, y: full.y, w: full.width, h: full.height };
    frame.classList.add("interactive");
    var view = { x: 0, y: 0, w: whole.w, h: whole.h };
    function show() {
      svg.setAttribute("viewBox", view.x + " " + view.y + " " + view.w + " " + view.h);
    }
    function fit() {
      // A small graph gets a frame its own height; a big one most of the window.
      var width = frame.getBoundingClientRect().width;
      var natural = whole.h * (width / Math.max(whole.w, width));
      svg.style.height = Math.max(Math.min(natural + 24, window.innerHeight * 0.72), 160) + "px";
      var box = svg.getBoundingClientRect();
      var aspect = box.width / Math.max(box.height, 1);
      // Small graphs at natural size, big ones shrunk to fit.
      var w = Math.max(whole.w, whole.h * aspect, box.width);
      view = { x: 0, y: 0, w: w, h: w / aspect };
      show();
    }
    fit();
    function toGraph(clientX, clientY) {
      var box = svg.getBoundingClientRect();
      return {
        x: view.x + ((clientX - box.left) / box.width) * view.w,
        y: view.y + ((clientY - box.top) / box.height) * view.h,
      };
    }
    svg.addEventListener("wheel", function (event) {
      event.preventDefault();
      var at = toGraph(event.clientX, event.clientY);
      var factor = event.deltaY > 0 ? 1.2 : 1 / 1.2;
      var w = Math.min(Math.max(view.w * factor, 50), whole.w * 20);
      var scale = w / view.w;
      view = { x: at.x - (at.x - view.x) * scale, y: at.y - (at.y - view.y) * scale, w: w, h: view.h * scale };
      show();
    }, { passive: false });
    var drag = null;
    svg.addEventListener("pointerdown", function (event) {
      drag = { x: event.clientX, y: event.clientY, view: Object.assign({}, view), moved: false };
    });
    window.addEventListener("pointermove", function (event) {
      if (!drag) return;
      var dx = event.clientX - drag.x, dy = event.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 4) drag.moved = true;
      if (!drag.moved) return;
      var box = svg.getBoundingClientRect();
      view.x = drag.view.x - (dx / box.width) * view.w;
      view.y = drag.view.y - (dy / box.height) * view.h;
      show();
    });
    window.addEventListener("pointerup", function () {
      if (drag && drag.moved) {
        // A drag is not a click on the node it ended over.
        svg.addEventListener("click", function swallow(e) {
          e.preventDefault();
          e.stopPropagation();
          svg.removeEventListener("click", swallow, true);
        }, true);
      }
      drag = null;
    });
    var fitButton = document.getElementById("graph-fit");
    if (fitButton) fitButton.addEventListener("click", fit);

    var search = document.getElementById("graph-search");
    var matches = document.getElementById("graph-matches");
    if (!search) return;
    var nodes = Array.prototype.slice.call(svg.querySelectorAll("a.node"));
    function centreOn(node) {
      var rect = node.querySelector("rect");
      var x = rect.x.baseVal.value + rect.width.baseVal.value / 2;
      var y = rect.y.baseVal.value + rect.height.baseVal.value / 2;
      var box = frame.getBoundingClientRect();
      var w = Math.min(view.w, box.width * 1.5);
      var h = w * (box.height / Math.max(box.width, 1));
      view = { x: x - w / 2, y: y - h / 2, w: w, h: h };
      show();
    }
    search.addEventListener("input", function () {
      var query = search.value.trim().toLowerCase();
      var found = 0;
      nodes.forEach(function (node) {
        var hit = query && node.getAttribute("data-task").toLowerCase().indexOf(query) >= 0;
        node.classList.toggle("match", !!hit);
        node.classList.toggle("dim", !!query && !hit);
        if (hit) found++;
      });
      matches.textContent = query ? String(found) : "";
    });
    search.addEventListener("keydown", function (event) {
      if (event.key !== "Enter") return;
      event.preventDefault();
      var first = svg.querySelector("a.node.match");
      if (first) centreOn(first);
    });
  });
})();

/* recovery: the in-app billing banner. README, "In-app notice". No dependencies.
   <script src="https://<recovery>/embed/v1/banner.js" data-token="<token>" nonce="..." async></script>
   Styles are set through the CSSOM (element.style), which a Content-Security-Policy does not
   restrict, so the host page needs only its nonce on this tag and connect-src for our origin. */
(function () {
  "use strict";
  var script = document.currentScript;
  var token = script && script.getAttribute("data-token");
  if (!token || !window.fetch) return;
  var src = new URL(script.src, document.baseURI);
  var url = new URL("status", src);
  url.searchParams.set("token", token);
  var locale = script.getAttribute("data-locale");
  if (locale) url.searchParams.set("locale", locale);
  var key = "recovery-banner:" + token.split(".")[1];

  function seen(state) {
    try { return sessionStorage.getItem(key) === state; } catch (e) { return false; }
  }
  function remember(state) {
    try { sessionStorage.setItem(key, state); } catch (e) { /* storage blocked: fine */ }
  }
  function css(node, rules) {
    for (var name in rules) node.style.setProperty(name, rules[name]);
    return node;
  }
  function make(tag, rules, text) {
    var node = css(document.createElement(tag), rules);
    if (text) node.textContent = text;
    return node;
  }

  function show(s) {
    var box = make("div", {
      display: "flex", "flex-wrap": "wrap", "align-items": "center", gap: "8px 16px",
      margin: "0", padding: "12px 16px", background: "#fff4d6", color: "#3d2c00",
      "border-bottom": "2px solid #b36b00", font: "15px/1.4 system-ui, sans-serif",
      "box-sizing": "border-box", width: "100%"
    });
    box.setAttribute("role", "region");
    box.setAttribute("aria-label", s.labels.region);
    box.setAttribute("data-recovery-banner", s.state);
    box.lang = s.lang;
    var text = make("p", { margin: "0", flex: "1 1 16em" }, s.message);
    text.setAttribute("role", "status");
    box.appendChild(text);
    if (s.update_url && s.action) {
      var link = make("a", {
        display: "inline-block", padding: "8px 14px", background: "#0b57d0", color: "#fff",
        "border-radius": "6px", "text-decoration": "none", "font-weight": "600"
      }, s.action);
      link.href = s.update_url;
      link.rel = "noopener noreferrer";
      box.appendChild(link);
    }
    var close = make("button", {
      background: "transparent", border: "1px solid #7a5600", color: "#3d2c00",
      "border-radius": "6px", padding: "4px 10px", font: "inherit", cursor: "pointer",
      "min-width": "44px", "min-height": "44px"
    }, "\u00d7");
    close.type = "button";
    close.setAttribute("aria-label", s.labels.dismiss);
    close.title = s.labels.dismiss;
    close.addEventListener("click", function () {
      remember(s.state);
      if (box.parentNode) box.parentNode.removeChild(box);
    });
    box.appendChild(close);
    var target = script.getAttribute("data-target");
    function place() {
      var where = (target && document.querySelector(target)) || document.body;
      where.insertBefore(box, where.firstChild);
    }
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", place);
    else place();
  }

  // The outcome, for the host page: data-state on this tag ("none" when nothing is shown).
  function done(state) { script.setAttribute("data-state", state); }
  fetch(url.toString(), { credentials: "omit", headers: { Accept: "application/json" } })
    .then(function (r) { return r.ok ? r.json() : null; })
    .then(function (s) {
      if (s && s.state !== "ok" && s.message && !seen(s.state)) {
        show(s);
        done(s.state);
      } else done("none");
    })
    .catch(function () { done("none"); }); // no banner rather than a broken page
})();

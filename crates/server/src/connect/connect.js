/*
 * elements connect helper: opens the hosted connect page in a popup and
 * resolves with the outcome. No dependencies.
 *
 *   ElementsConnect.open(sessionUrl).then(function (outcome) {
 *     // {instanceId: 42} or {error: "access_denied", errorDescription: "..."}
 *   });
 *
 * Rejects only when the popup cannot be opened (blocked). Closing the popup
 * before the end resolves {error: "closed", errorDescription: "..."}.
 */
(function (global) {
  "use strict";

  function open(sessionUrl, options) {
    options = options || {};
    return new Promise(function (resolve, reject) {
      var url;
      try {
        url = new URL(sessionUrl, global.location.href);
      } catch (e) {
        reject(new Error("elements connect: not a URL: " + sessionUrl));
        return;
      }
      url.searchParams.set("popup", "1");
      var features = options.features || "popup,width=520,height=720";
      var popup = global.open(url.toString(), options.name || "elements-connect", features);
      if (!popup) {
        reject(new Error("elements connect: the popup was blocked"));
        return;
      }
      var done = false;
      function finish(outcome) {
        if (done) return;
        done = true;
        global.removeEventListener("message", onMessage);
        clearInterval(timer);
        resolve(outcome);
      }
      function onMessage(event) {
        // Only the connect page, from the elements server's own origin.
        if (event.origin !== url.origin || event.source !== popup) return;
        var data = event.data;
        if (!data || data.type !== "elements-connect") return;
        var outcome = {};
        if (typeof data.instanceId === "number") outcome.instanceId = data.instanceId;
        if (typeof data.error === "string") {
          outcome.error = data.error;
          outcome.errorDescription = String(data.errorDescription || "");
        }
        finish(outcome);
      }
      global.addEventListener("message", onMessage);
      var timer = setInterval(function () {
        if (popup.closed) {
          // A message posted just before closing is delivered first.
          setTimeout(function () {
            finish({ error: "closed", errorDescription: "the connect window was closed" });
          }, 300);
          clearInterval(timer);
        }
      }, 250);
    });
  }

  global.ElementsConnect = { open: open };
})(window);

/* The connect page's popup hand-off: posts the outcome to the opener, for
 * the exact origin of the app's redirect URL only, and closes. */
(function () {
  "use strict";
  var el = document.getElementById("outcome");
  if (!el || !window.opener) return;
  var origin = el.getAttribute("data-target-origin");
  if (!origin) return;
  var message = { type: "elements-connect" };
  var id = el.getAttribute("data-instance-id");
  if (id) message.instanceId = Number(id);
  var error = el.getAttribute("data-error");
  if (error) {
    message.error = error;
    message.errorDescription = el.getAttribute("data-error-description") || "";
  }
  window.opener.postMessage(message, origin);
  window.close();
})();

// The built single-page app (a stand-in for Gorax's bundle): it routes on the client, so any
// path the edge does not find as a file must answer index.html.
const routes = { "/": "home", "/invoices": "invoices", "/settings": "settings" };
const view = routes[window.location.pathname] || "not-found";
document.getElementById("app").textContent = `Gorax: ${view}`;
const socket = new WebSocket(`wss://api.${window.location.host.replace(/^app\./, "")}/ws`);
socket.addEventListener("message", (event) => console.log("event", event.data));

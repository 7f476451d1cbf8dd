/** Request and response shapes of the optd API (field names are the server's JSON names). */
export {};
//# sourceMappingURL=types.js.map
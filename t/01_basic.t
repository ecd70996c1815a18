# The first handshake is stapled; the quiet cases; revoked; ForceURL; a
# vhost with ResilientStapling off; both real clients agree.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use lib 't/lib';
use RSTest;
use Time::HiRes qw(sleep);

plan tests => 22;

# A new certificate (nothing in the store yet) is fetched right after start;
# once that fetch has landed and the other children picked it up (they look
# every 100 ms while they have nothing), the first handshake is stapled. One
# attempt, no retries: this is what a client sees.
RSTest::wait_for(sub { RSTest::error_log() =~ /RS0201: OCSP response for CN=good\.rs\.test,/ }, 10);
sleep 0.3;
my $h = RSTest::handshake('good');
ok($h->{ok});
ok($h->{stapled}) or warn "# $h->{raw}\n";
ok(($h->{status} // '') eq 'good');

# The responder goes down right after start: still stapled.
RSTest::set_mode('good', 'close');
$h = RSTest::handshake('good');
ok($h->{stapled} && $h->{status} eq 'good');
ok(RSTest::curl_cert_status('good') == 0);
RSTest::set_mode('good', 'good');

my $must = RSTest::wait_for(sub { my $x = RSTest::handshake('muststaple'); $x->{stapled} && $x }, 5);
ok($must && $must->{status} eq 'good');
ok(RSTest::curl_cert_status('muststaple') == 0);

# No OCSP URL: served, unstapled, one info line, startup unaffected.
my $noaia = RSTest::handshake('noaia');
ok($noaia->{ok});
ok(!$noaia->{stapled});
ok(RSTest::curl_cert_status('noaia') != 0);    # curl insists on a staple
my $log = RSTest::error_log();
ok($log =~ /RS0104: certificate CN=noaia\.rs\.test.*no http:\/\/ OCSP responder URL/);

# Revoked is the truth: stapled, logged at error level, refused by curl.
my $rev = RSTest::wait_for(sub { my $x = RSTest::handshake('revoked'); $x->{stapled} && $x }, 5);
ok($rev && $rev->{status} eq 'revoked');
ok(RSTest::curl_cert_status('revoked') != 0);
ok(RSTest::error_log() =~ /\[resilient_stapling:error\].*RS0203: certificate CN=revoked\.rs\.test.*REVOKED/);

# ForceURL: the AIA points at a dead port, the forced URL is used.
my $f = RSTest::wait_for(sub { my $x = RSTest::handshake('forceurl'); $x->{stapled} && $x }, 5);
ok($f && $f->{status} eq 'good');
ok(@{ RSTest::requests('forceurl') } >= 1);
ok($log !~ /127\.0\.0\.1:9\/nowhere/);

# ResilientStapling off: we decline, nothing is fetched or stapled.
my $off = RSTest::handshake('off');
ok($off->{ok} && !$off->{stapled});
ok(@{ RSTest::requests('off') } == 0);

# A responder slower than usual but within the deadline is fine.
my $slow = RSTest::wait_for(sub { my $x = RSTest::handshake('slow'); $x->{stapled} && $x }, 5);
ok($slow && $slow->{status} eq 'good');

# Every attempt logs one line (success at info with the duration).
ok(RSTest::error_log() =~ /RS0201: OCSP response for CN=good\.rs\.test,.* in \d+ ms: good/);
ok(RSTest::error_log() !~ /AH0\d+: .*stapling_renew_response/);
